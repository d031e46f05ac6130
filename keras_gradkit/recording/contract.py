"""The recording contract: what a step publishes, what a backend provides.

A step publishes its `StepScalars`, per-variable norms and (optionally) its
gradients to a `Sink`, and adds its `Totals` to the sink's running totals.
Each backend's `keras_gradkit/backend/<name>/recording.py` implements
`RecordingBackend` in full (`tests/test_recording.py` checks it):
TensorFlow and PyTorch keep a sink in variables the step assigns; JAX keeps
it as state its own train function carries through the jitted step.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class StepScalars(NamedTuple):
    """The scalars one optimizer step publishes (tensors inside the step,
    floats once read).

    `global_norm` and `global_norm_clipped` are the norms of the whole
    gradient the update uses, before and after the policy; `threshold` is
    the policy's (NaN when it has none); `clipped` and `skipped` say whether
    the policy changed the update and whether the update was skipped;
    `loss_scale` is NaN without a `LossScaleOptimizer`.
    """

    step: Any
    global_norm: Any
    global_norm_clipped: Any
    threshold: Any
    clipped: Any
    skipped: Any
    loss_scale: Any


class Totals(NamedTuple):
    """Running totals a sink keeps over the steps it counted.

    Counts of updates (`steps`), of clipped and of skipped ones; over the
    applied (not skipped) updates: their count, how many had a non-finite
    global norm, how many had a finite update ratio `|w_new - w_old| /
    |w_new|` (all variables together), and the sums of their finite global
    norms before and after clipping and of the squares of their update
    ratios. Differences of two readings (`since`) give means and root mean
    squares over an epoch or between two checks.
    """

    steps: Any = 0.0
    clipped_steps: Any = 0.0
    skipped_steps: Any = 0.0
    applied_steps: Any = 0.0
    non_finite_applied_steps: Any = 0.0
    update_ratio_steps: Any = 0.0
    global_norm_sum: Any = 0.0
    global_norm_clipped_sum: Any = 0.0
    update_ratio_square_sum: Any = 0.0

    def since(self, earlier):
        """The totals of the steps counted after `earlier` (another reading)."""
        return Totals(*(now - then for now, then in zip(self, earlier)))


class StepStatistics(NamedTuple):
    """What the latest recorded step published, read on the host.

    `gradient_norms`, `update_norms` and `weight_norms` follow the recorder's
    variables; `update_norms`/`weight_norms` are None when not recorded and
    `gradients` (post-policy, float32) is None unless gradients are recorded.
    `totals` are the running `Totals` of the recorder.
    """

    step: int
    global_norm: float
    global_norm_clipped: float
    threshold: float
    clipped: bool
    skipped: bool
    loss_scale: float
    gradient_norms: np.ndarray
    update_norms: Any
    weight_norms: Any
    gradients: Any
    totals: Totals

    @property
    def steps(self):
        return int(self.totals.steps)

    @property
    def clipped_steps(self):
        return int(self.totals.clipped_steps)

    @property
    def skipped_steps(self):
        return int(self.totals.skipped_steps)


@runtime_checkable
class Sink(Protocol):
    """Where the steps of one recorder publish, and where the host reads them.

    Made by the backend as `Sink(spec, num_totals)`, `spec` mapping a name to
    the list of shapes of its float32 values.
    """

    def add(self, name: str, shapes: Sequence[tuple]) -> None:
        """Adds values to publish (a step traced before must be traced again)."""

    def publish(self, when: Any, values: Mapping[str, list], counts: Any) -> None:
        """Inside the step: keeps `values` and adds `counts` (a float32 vector
        in the order of `Totals`) to the running totals, if `when` (a boolean
        tensor, or the Python `True` when the step counts in any case) is true.
        A value whose shape is not its spec's raises `ValueError`."""

    def read(self) -> tuple:
        """`(values, totals)` as NumPy; `values` is None before the first publish."""


@runtime_checkable
class RecordingBackend(Protocol):
    """What `keras_gradkit/backend/<name>/recording.py` provides."""

    Sink: Callable[..., Sink]

    def snapshot(self, variable: Any) -> Any:
        """The variable's current value, read now (ordered before later updates)."""

    def snapshots(self, variables: Sequence[Any]) -> list:
        """`[snapshot(v) for v in variables]`."""

    def values_now(self, variables: Sequence[Any]) -> list:
        """The variables' current values, for what is computed from them
        before any later update: a backend whose step runs eagerly hands
        each variable's own storage, the others `snapshots(variables)`."""

    def install(self, optimizer: Any, monitor: Any) -> Callable[[], None]:
        """Hooks `monitor` on the optimizer method the trainer calls; returns its removal."""

    def collects_on_device(self) -> bool:
        """Whether the sinks' values stay on the device only in a train
        function of `make_train_function` (so one must be made even when
        nothing else changed)."""

    def make_train_function(self, model: Any, sinks: Sequence[Sink]) -> None:
        """Makes the model's train function anew, its steps publishing to `sinks`."""

    def first_batch(
        self, model: Any, train_function: Callable, receive: Callable[[Any], None]
    ) -> Callable:
        """`train_function` that hands the first batch it trains on (as `fit`
        made it: `(x, y, sample_weight)` or part of it) to `receive`, or None
        where it cannot be read, and otherwise trains exactly as the original."""
