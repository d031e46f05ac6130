"""`GradientBoard.write_statistics` for custom training loops (private): the
checks of its arguments and the steps it writes at."""

import logging

import keras
import numpy as np

from keras_gradkit import _validation
from keras_gradkit.callbacks import _event_writer
from keras_gradkit.callbacks._sources import find_clipped_optimizer

logger = logging.getLogger("keras_gradkit")


def as_int(step):
    """A scalar integer tensor or variable (e.g. `optimizer.iterations`) as an
    int; anything else as it is."""
    if isinstance(step, (bool, int, np.integer)) or not hasattr(step, "shape"):
        return step
    value = np.asarray(keras.ops.convert_to_numpy(step))
    return int(value) if value.shape == () and np.issubdtype(value.dtype, np.integer) else step


def check_arguments(optimizer, step, histograms):
    """The `ClippedOptimizer` to read; raises for bad arguments."""
    found = find_clipped_optimizer(optimizer)
    if found is None:
        raise TypeError(
            "Argument `optimizer` must be a keras_gradkit.optimizers.ClippedOptimizer (or wrap "
            f"one). Received: optimizer={optimizer!r}"
        )
    _validation.non_negative_int("step", as_int(step))
    _validation.bool_arg("histograms", histograms)
    if histograms and not found.records_gradients:
        raise ValueError(
            "`histograms=True` needs the ClippedOptimizer to keep the gradients: create it with "
            "`record_gradients=True`."
        )
    return found


class LoopSteps:
    """The steps a custom loop's events are written at: they only go forward.

    A loop restarted on a `log_dir` that already holds later events gets an
    offset, and a step not after the last one written is skipped (both are
    logged once).
    """

    def __init__(self, run_dir):
        self._run_dir = run_dir
        self._offset = None
        self._last = -1
        self._warned_old = False

    def next(self, step):
        """The step to write for the loop's `step`, or None to skip it."""
        if self._offset is None:
            self._last = _event_writer.max_step_on_disk(self._run_dir)
            self._offset = max(0, self._last + 1 - step)
            if self._offset:
                logger.warning(
                    "GradientBoard: %r already holds events up to step %d; steps of this loop "
                    "are written with an offset of %d so that they go forward.",
                    self._run_dir,
                    self._last,
                    self._offset,
                )
        step += self._offset
        if step <= self._last:
            if not self._warned_old:
                self._warned_old = True
                logger.warning(
                    "GradientBoard.write_statistics: step %d is not after the last step written "
                    "(%d); it is ignored (TensorBoard drops events whose steps go back).",
                    step,
                    self._last,
                )
            return None
        self._last = step
        return step
