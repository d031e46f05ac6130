"""`Recorder`: the latest step's statistics of one optimizer, published from
inside its step through a backend `Sink` and read on the host."""

import math

import numpy as np

from keras_gradkit import backend
from keras_gradkit.backend.common import gradients as sparse_gradients
from keras_gradkit.backend.common import norms
from keras_gradkit.recording.contract import StepScalars, StepStatistics, Totals

# The step's ops: Keras's, or (PyTorch, eager) the backend's own.
step_ops = backend.get("step_ops")


class Recorder:
    """The latest step's statistics of one optimizer.

    Args:
        variables: the model variables the statistics describe, in order.
        update_norms: bool, whether steps publish update and weight norms.
        gradients: bool, whether steps publish their post-policy gradients.
    """

    def __init__(self, variables, update_norms=True, gradients=False):
        self.variables = list(variables)
        self.update_norms = update_norms
        k = len(self.variables)
        spec = {"scalars": [(len(StepScalars._fields),)], "gradient_norms": [(k,)]}
        if update_norms:
            spec.update(update_norms=[(k,)], weight_norms=[(k,)])
        self.sink = backend.get("recording").Sink(spec, len(Totals._fields))
        self.gradients = False
        self._sink_has_gradients = False
        if gradients:
            self.enable_gradients()

    def enable_gradients(self):
        """Starts publishing the gradients. Returns True when the sink gained
        them now, so that a step traced before must be traced again (a step
        traced while they were on keeps publishing them)."""
        self.gradients = True
        if self._sink_has_gradients:
            return False
        self.sink.add("gradients", [tuple(v.shape) for v in self.variables])
        self._sink_has_gradients = True
        return True

    def disable_gradients(self):
        """Stops reading (and tracing anew) the gradients."""
        self.gradients = False

    def publish(self, when, scalars, gradient_norms, update=None, gradients=None):
        """Publishes a step if `when` (a boolean tensor): called inside the step.

        Args:
            when: boolean scalar; False for a step that is not an update
                (a gradient-accumulation micro-step). The Python `True` (every
                step counts) lets a sink write without choosing.
            scalars: the step's `StepScalars`.
            gradient_norms: float32 vector, one entry per recorder variable.
            update: `(update_norms, weight_norms)` vectors, when recorded.
            gradients: list of gradients (None entries as zeros), when recorded.
        """
        values = {
            "scalars": [step_ops.stack([step_ops.cast(s, "float32") for s in scalars])],
            "gradient_norms": [gradient_norms],
        }
        if self.update_norms:
            values["update_norms"], values["weight_norms"] = [update[0]], [update[1]]
        if self.gradients:
            values["gradients"] = [
                step_ops.zeros(v.shape, "float32")
                if g is None
                else step_ops.cast(sparse_gradients.to_dense(g), "float32")
                for g, v in zip(gradients, self.variables)
            ]
        counts = _counts(scalars, update if self.update_norms else None)
        self.sink.publish(when, values, counts)

    def latest(self):
        """The latest published step as `StepStatistics`, or None if none was."""
        values, totals = self.sink.read()
        if values is None:
            return None
        s = StepScalars(*(float(x) for x in values["scalars"][0]))
        return StepStatistics(
            step=int(s.step),
            global_norm=s.global_norm,
            global_norm_clipped=s.global_norm_clipped,
            threshold=s.threshold,
            clipped=bool(s.clipped),
            skipped=bool(s.skipped),
            loss_scale=s.loss_scale,
            gradient_norms=values["gradient_norms"][0],
            update_norms=values["update_norms"][0] if self.update_norms else None,
            weight_norms=values["weight_norms"][0] if self.update_norms else None,
            # A step traced before gradients were switched on publishes none.
            gradients=values.get("gradients") if self.gradients else None,
            totals=Totals(*(float(t) for t in totals)),
        )

    def totals(self):
        """The running `Totals` (zeros before the first publish)."""
        return Totals(*(float(t) for t in self.sink.read()[1]))


def _counts(scalars, update):
    """What one step adds to the running `Totals`, as a float32 vector."""
    zero = step_ops.zeros((), "float32")
    skipped = step_ops.cast(scalars.skipped, "bool")
    applied = step_ops.logical_not(skipped)
    total = step_ops.cast(scalars.global_norm, "float32")
    after = step_ops.cast(scalars.global_norm_clipped, "float32")
    finite = step_ops.logical_and(step_ops.isfinite(total), step_ops.isfinite(after))
    summed = step_ops.logical_and(applied, finite)
    ratio_steps, ratio_squares = False, zero
    if update is not None:
        # |w_new - w_old| / |w_new| over all variables together.
        update_norm, weight_norm = norms.norms(update)  # one call for the two
        ratio = step_ops.divide(update_norm, step_ops.maximum(weight_norm, 1e-30))
        ratio_steps = step_ops.logical_and(applied, step_ops.isfinite(ratio))
        ratio_squares = step_ops.where(ratio_steps, step_ops.square(ratio), zero)
    counts = Totals(
        steps=True,
        clipped_steps=scalars.clipped,
        skipped_steps=skipped,
        applied_steps=applied,
        non_finite_applied_steps=step_ops.logical_and(applied, step_ops.logical_not(finite)),
        update_ratio_steps=ratio_steps,
        global_norm_sum=step_ops.where(summed, total, zero),
        global_norm_clipped_sum=step_ops.where(summed, after, zero),
        update_ratio_square_sum=ratio_squares,
    )
    # Six counts, then three sums: one cast for the counts (fewer eager ops).
    flags, sums = counts[:6], counts[6:]
    return step_ops.concatenate(
        [step_ops.cast(step_ops.stack(flags), "float32"), step_ops.stack(sums)]
    )


def flat_statistics(latest, counts, variables, update_norms, threshold=math.nan):
    """The documented flat dict of `gradient_statistics()`.

    Args:
        latest: the latest `StepStatistics`, or None (norms then read NaN).
        counts: `(steps, clipped_steps, skipped_steps)`.
        variables: the variables of the per-variable keys, in order.
        update_norms: bool, include `update_norm/*` and `weight_norm/*`.
        threshold: the threshold to report before the first step.
    """
    nan = math.nan
    stats = {"global_norm": nan, "global_norm_clipped": nan, "threshold": threshold, "clipped": 0.0}
    stats.update({k: float(v) for k, v in zip(("steps", "clipped_steps", "skipped_steps"), counts)})
    k = len(variables)
    per_variable = {"gradient_norm": np.full(k, nan)}
    if update_norms:
        per_variable.update(update_norm=np.full(k, nan), weight_norm=np.full(k, nan))
    if latest is not None:
        stats.update(
            global_norm=latest.global_norm,
            global_norm_clipped=latest.global_norm_clipped,
            threshold=latest.threshold,
            clipped=float(latest.clipped),
        )
        per_variable["gradient_norm"] = latest.gradient_norms
        if update_norms and latest.update_norms is not None:
            per_variable.update(update_norm=latest.update_norms, weight_norm=latest.weight_norms)
    for name, values in per_variable.items():
        for v, n in zip(variables, values):
            stats[f"{name}/{v.path}"] = float(n)
    return stats
