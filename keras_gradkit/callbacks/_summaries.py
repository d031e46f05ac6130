"""What GradientBoard writes, as pure functions of what it read (private):
summary values for TensorBoard (`_event_writer` frames them) and the
entries it adds to Keras's `logs`."""

import math

import numpy as np

from keras_gradkit.callbacks import _depth, _event_writer, _time_probe
from keras_gradkit.diagnostics import depth as depth_measure

TIME_DESCRIPTION = "Mean over the probe batch of |d loss_i / d x_{i,t}| for each time step t."


def scalars(latest, counts, since_write, logged):
    """`{tag: float}` of one write of the scalars (all in one event).

    Args:
        latest: the latest `recording.StepStatistics`.
        counts: the running `Counts`; `since_write` their change since the previous write.
        logged: `[(index, variable path)]` of the variables to log.
    """
    values = {
        "gradient_norm/global": latest.global_norm,
        "gradient_norm/global_clipped": latest.global_norm_clipped,
    }
    if math.isfinite(latest.threshold):  # NaN: the policy has none
        values["clipping/threshold"] = latest.threshold
    steps, clipped, skipped = counts
    values["clipping/skipped_steps"] = float(skipped)
    if since_write[0] > 0:
        values["clipping/clipped_fraction"] = since_write[1] / since_write[0]
    if not math.isnan(latest.loss_scale):
        values["mixed_precision/loss_scale"] = latest.loss_scale
    for i, path in logged:
        values[f"gradient_norm/{path}"] = float(latest.gradient_norms[i])
    if latest.update_norms is not None:
        for i, path in logged:
            update, weight = float(latest.update_norms[i]), float(latest.weight_norms[i])
            # 0 / 0 (no update of a zero weight) is written as 0.
            values[f"update_ratio/{path}"] = (
                update / weight if weight else (0.0 if update == 0 else math.inf)
            )
    # Non-finite norms and ratios are written: they are what to look for.
    return values


def histograms(gradients, logged):
    """Histogram values of `{path: gradient}` for the logged paths."""
    return [
        # Non-finite steps show in gradient_norm/*.
        _event_writer.histogram_value(f"gradients/{path}", g[np.isfinite(g)])
        for path, g in gradients.items()
        if logged(path)
    ]


def depth(names, norms, title, plots):
    """The gradient across depth: its tensor, its first-to-last scalar and its picture."""
    ratio = depth_measure.first_to_last(norms)
    values = [
        _event_writer.tensor_value(
            "gradient_depth/norms", norms, depth_measure.PLUGIN, depth_measure.DESCRIPTION
        ),
        *_event_writer.scalar_values({"gradient_depth/first_to_last": ratio}),
    ]
    if plots:
        png, width, height = _depth.plot_png(names, norms, title)
        values.append(_event_writer.image_value("gradient_depth", png, width, height))
    return values


def time_probe(results, title, plots):
    """The time probe's norms, reaches and pictures, for each probed sequence."""
    values = []
    for name, norms, reach in results:
        tag = f"time_gradient/{name}"
        reach_tag = "time_gradient/reach" if name == "input" else f"{tag}/reach"
        values.append(
            _event_writer.tensor_value(
                f"{tag}/norms", norms, _event_writer.TIME_GRADIENT_PLUGIN, TIME_DESCRIPTION
            )
        )
        values += _event_writer.scalar_values({reach_tag: float(reach)})
        if plots:
            png, width, height = _time_probe.plot_png(norms, f"{title}: {name}")
            values.append(_event_writer.image_value(tag, png, width, height))
    return values


def batch_logs(written, has_policy, can_skip):
    """The Keras logs of a batch-level write, from the scalars it wrote."""
    found = {"gradient_norm": written["gradient_norm/global"]}
    if has_policy:
        found["gradient_norm_clipped"] = written["gradient_norm/global_clipped"]
        if "clipping/clipped_fraction" in written:
            found["clipped_fraction"] = written["clipping/clipped_fraction"]
    if can_skip:
        found["skipped_steps"] = written["clipping/skipped_steps"]
    return found


def epoch_logs(norm, clipped, has_policy, skipped=None):
    """The epoch's Keras logs: the means of the global norms before and after
    clipping over its applied updates (NaN when one was not finite), its
    clipped fraction and the running total of skipped steps.

    Args:
        norm: the epoch's `Totals` of the recorder measuring the global norm.
        clipped: the epoch's `Totals` of the one measuring the clipping.
        has_policy: whether the updates are clipped.
        skipped: the running total of skipped steps, where steps can be skipped.
    """

    def mean(totals, key):
        if not totals.applied_steps:
            return None
        if totals.non_finite_applied_steps > 0:
            return math.nan
        return getattr(totals, key) / totals.applied_steps

    value = mean(norm, "global_norm_sum")
    if value is None:
        return {}
    found = {"gradient_norm": value}
    if has_policy:
        found["gradient_norm_clipped"] = mean(clipped, "global_norm_clipped_sum")
        if clipped.steps:
            found["clipped_fraction"] = clipped.clipped_steps / clipped.steps
    if skipped is not None:
        found["skipped_steps"] = float(skipped)
    return {k: v for k, v in found.items() if v is not None}
