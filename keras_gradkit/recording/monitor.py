"""`Monitor`: records the steps of an optimizer that is not a
`ClippedOptimizer`, through a hook on the optimizer object itself.

The backend installs the hook (`backend/<name>/recording.install`) as an
instance-level wrapper of `apply` (TensorFlow, PyTorch) or `stateless_apply`
(JAX) for the duration of a `fit`, and removes it afterwards; the optimizer
keeps its class, its variables and its config.
"""

import weakref
from typing import NamedTuple

from keras_gradkit import _cache, backend
from keras_gradkit.recording.recorder import Recorder
from keras_gradkit.recording.step import (
    equivalent_policy,
    measure_step,
    publish_step,
    scalars_of,
)

# The step's ops: Keras's, or (PyTorch, eager) the backend's own.
step_ops = backend.get("step_ops")


class _Pending(NamedTuple):
    """A step measured before the update, published after it."""

    indices: list
    measured: object
    scalars: object


class Monitor:
    """Records the steps of `optimizer` while `active`.

    Reports Keras's own `clipnorm`, `global_clipnorm` or `clipvalue` as the
    equivalent policy (threshold, clipped flag, clipped gradient), and under
    a `LossScaleOptimizer` counts the steps it skips (non-finite gradients).
    `traces` counts the calls of the hook: traces of the train step on
    TensorFlow and JAX, steps on PyTorch.
    """

    def __init__(self, optimizer):
        self._optimizer = weakref.ref(optimizer)
        self.policy = equivalent_policy(optimizer)
        self.recorder = None
        self.active = False
        self.traces = 0

    def prepare(self, variables, gradients):
        """Creates (or extends) the recorder. Returns True when what a traced
        step publishes changed, so the step must be traced again."""
        variables = list(variables)
        if self.recorder is None or [id(v) for v in self.recorder.variables] != [
            id(v) for v in variables
        ]:
            self.recorder = Recorder(variables, update_norms=True, gradients=gradients)
            return True
        if gradients and not self.recorder.gradients:
            self.recorder.enable_gradients()
            return True
        return False

    def before_update(self, grads, tvs, replica_sum=None):
        """Measures the step before the update (inside the step)."""
        self.traces += 1
        measured = measure_step(self._optimizer(), grads, tvs, self.policy, (), replica_sum)
        index = {id(v): i for i, v in enumerate(self.recorder.variables)}
        skipped = (
            step_ops.logical_not(step_ops.isfinite(measured.global_norm))
            if measured.view.loss_scale is not None
            else step_ops.convert_to_tensor(False)
        )
        clipped = step_ops.logical_and(measured.info["clipped"], step_ops.logical_not(skipped))
        scalars = scalars_of(measured, clipped, skipped)
        return _Pending([index[id(v)] for v in tvs], measured, scalars)

    def after_update(self, pending, before, after):
        """Publishes the step, given the variables' values before and after it."""
        publish_step(
            self.recorder,
            pending.indices,
            pending.measured,
            pending.scalars,
            pending.measured.view.counted,
            before,
            after,
        )


def monitor_for(optimizer):
    """The `Monitor` of an optimizer (one per optimizer object, kept while it lives)."""
    return _cache.get_or_make(optimizer, "monitor", lambda: Monitor(optimizer))
