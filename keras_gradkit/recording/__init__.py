"""Statistics of each optimizer step, recorded inside the train step.

One path serves a `ClippedOptimizer` and a plain optimizer watched by
`GradientBoard`: `measure_step` measures a step (gradient norms, the
clipping decision) before its update and `publish_step` publishes it (with
the update norms, optionally the gradients) to a `Recorder`, whose backend
`Sink` carries it out of the step, compiled or not: variables that no
optimizer or layer owns on TensorFlow and PyTorch; on JAX, state carried by
the train function of `backend.jax.recording.make_train_function`, or
`jax.debug.callback` anywhere else. Never through the optimizer's own
variables, so what Keras saves for an optimizer is the same whether or not
anything is recorded. `contract` defines what a sink and a backend provide.
"""

from keras_gradkit.recording.contract import (
    RecordingBackend,
    Sink,
    StepScalars,
    StepStatistics,
    Totals,
)
from keras_gradkit.recording.monitor import Monitor, monitor_for
from keras_gradkit.recording.recorder import Recorder, flat_statistics
from keras_gradkit.recording.step import (
    MeasuredStep,
    UpdateView,
    as_gradients,
    base_optimizer,
    equivalent_policy,
    measure_step,
    optimizer_chain,
    publish_step,
    scalars_of,
    scatter,
)
