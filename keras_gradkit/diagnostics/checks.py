"""The doctor's checks: measures in, findings out.

`assemble` judges what was measured on one batch (and, during training, the
updates since the previous check) and returns the `Report`;
`keras_gradkit.diagnose` and `GradientBoard` both call it, so both judge the
same numbers the same way. Each kind comes from one documented measure,
computed in `time_probe` (through time) and `depth` (across depth) or read
from the recorded training steps; its threshold is in `thresholds`, its
advice in `advice`, its judging function below.
"""

import math
from typing import NamedTuple

import numpy as np

from keras_gradkit.diagnostics import advice, depth, graph, time_probe
from keras_gradkit.diagnostics.report import Finding, Report
from keras_gradkit.diagnostics.thresholds import KINDS, check_thresholds

# The earliest (latest) steps of a sequence: the first (last) tenth of its
# unmasked steps, at least one.
EDGE_FRACTION = 0.1

# The depth kinds need this many layers with weights: between two layers the
# ratio is one of parameter counts and input scales, not of depth.
MIN_DEPTH = 3


class TrainingMeasures(NamedTuple):
    """What the updates since the previous check did (measured by `GradientBoard`).

    Attributes:
        updates: int, how many updates since the previous check.
        clipped: int, how many of them the clipping policy changed (None:
            no policy).
        skipped: int, how many were skipped (None: nothing can skip them).
        update_ratio: float, the latest update's largest per-layer update
            ratio (None when not known).
        update_ratio_layer: str, the layer of `update_ratio` (None when not
            known).
        rms_update_ratio: float, the root mean square, over the updates
            since the previous check, of the update ratio of all variables
            together (None when not known).
    """

    updates: int
    clipped: int | None = None
    skipped: int | None = None
    update_ratio: float | None = None
    update_ratio_layer: str | None = None
    rms_update_ratio: float | None = None


def assemble(
    model,
    layer_names,
    gradient_norms,
    global_norm,
    *,
    weight_norms=None,
    time_results=None,
    training=None,
    skipped=False,
    thresholds=None,
    notes=(),
):
    """The report of one check: every kind judged against `thresholds`.

    A non-finite gradient (or weight) is the only finding of the batch's
    gradients when there is one; otherwise they are judged through time and
    across depth. The training kinds are judged in either case.

    Args:
        model: the Keras model measured.
        layer_names: the names of its layers with trainable weights, in
            model order (`depth.layer_norms`).
        gradient_norms: the gradient norm of each of those layers.
        global_norm: float, the gradient norm of all variables together.
        weight_norms: None, or the weight norm of each of those layers
            after the latest update (a non-finite one was applied).
        time_results: None (not measured through time), or the results of
            `TimeProbe.compute`, `[(name, norms, reach)]`.
        training: None, or the `TrainingMeasures` since the previous check.
        skipped: bool, the latest step was skipped by a `LossScaleOptimizer`
            (its gradient is not finite by design, counted in
            `skipped_steps`): only non-finite weights count.
        thresholds: None (the defaults), a `Thresholds` or its `to_dict()`.
        notes: sequence of str, what could not be measured and why.

    Returns:
        A `Report`, its findings in the order of `KINDS`.
    """
    thresholds = check_thresholds(thresholds)
    measures = {
        "gradient_norm": global_norm,
        "depth": {
            "layers": layer_names,
            "norms": gradient_norms,
            "first_to_last": depth.first_to_last(gradient_norms),
        },
    }
    non_finite = _non_finite(layer_names, gradient_norms, weight_norms, skipped)
    if non_finite is not None:
        findings = [non_finite]
    else:
        findings = _gradient_findings(
            model, layer_names, gradient_norms, time_results, thresholds, measures
        )
    if training is not None:
        findings += training_findings(
            training.updates,
            training.clipped,
            training.skipped,
            (training.update_ratio, training.update_ratio_layer, training.rms_update_ratio),
            thresholds,
            measures,
        )
    return Report(sort_findings(findings), measures, notes)


def _non_finite(names, norms, weight_norms, skipped):
    """The `non_finite_gradient` finding of the check, or None."""
    if not skipped:
        return non_finite_finding(names, norms, weight_norms)
    if weight_norms is None:
        return None
    # A step the LossScaleOptimizer skipped is not finite by design (it
    # counts in skipped_steps), but the weights themselves must stay finite.
    return non_finite_finding(names, [0.0] * len(names), weight_norms)


def _gradient_findings(model, names, norms, time_results, thresholds, measures):
    """The findings of finite gradients: through time (when measured) and across depth."""
    findings = []
    if time_results is not None:
        found, measures["time"] = time_findings(model, time_results, thresholds)
        findings += found
    findings += depth_findings(model, names, norms, thresholds)
    return findings


def sort_findings(findings):
    """The findings in the order of `KINDS`."""
    return sorted(findings, key=lambda f: KINDS.index(f.kind))


# ------------------------------------------------------------ through time
def time_summary(norms):
    """`{"steps", "early", "late", "peak", "reach"}` of one sequence's per-step
    norms (NaN entries, masked steps, left out); None when not finite or
    shorter than two steps."""
    norms = np.asarray(norms, "float64")
    norms = norms[~np.isnan(norms)]
    if norms.size < 2 or not np.all(np.isfinite(norms)):
        return None
    k = max(1, int(norms.size * EDGE_FRACTION))
    return {
        "steps": int(norms.size),
        "early": float(norms[:k].mean()),
        "late": float(norms[-k:].mean()),
        "peak": float(norms.max()),
        "reach": int(time_probe.reach(norms)),
    }


def time_findings(model, results, thresholds):
    """Findings through time from `TimeProbe` results `[(name, norms, reach)]`.

    Returns `(findings, summaries)`. A recurrent layer's sequence names the
    layer; the model input is named only when no recurrent layer's sequence
    shows the same kind (it is then the same evidence)."""
    summaries = {}
    for name, norms, _ in results:
        summary = time_summary(norms)
        if summary is not None:
            summaries[name] = summary
    by_name = {layer.name: layer for layer in getattr(model, "layers", [])}
    recurrent = graph.recurrent_layers(model)
    findings = []
    for kind in ("vanishing_through_time", "exploding_through_time"):
        threshold = thresholds.for_kind(kind)
        found = _time_hits(kind, summaries, threshold)
        layers_found = [f for f in found if f[0] != "input"]
        for name, value in layers_found or found:
            layer = by_name.get(name) if name != "input" else (recurrent[0] if recurrent else None)
            findings.append(Finding(kind, name, value, threshold, advice.time_advice(kind, layer)))
    return findings, summaries


def _time_hits(kind, summaries, threshold):
    """`[(sequence name, value)]` of the sequences past `threshold` for `kind`."""
    found = []
    for name, s in summaries.items():
        if s["peak"] <= 0:
            continue  # the loss does not depend on this sequence
        if kind == "vanishing_through_time":
            value, hit = s["early"] / s["peak"], s["early"] / s["peak"] < threshold
        else:
            value = s["early"] / s["late"] if s["late"] > 0 else math.inf
            hit = value > threshold
        if hit:
            found.append((name, value))
    return found


# ------------------------------------------------------------ across depth
def depth_findings(model, names, norms, thresholds):
    """Findings across depth from the layer norms of `depth.layer_norms`, in model order.

    `where` is the first layer that the backward pass, going from the last
    layer toward the input, reaches past the threshold."""
    findings = []
    if len(norms) < MIN_DEPTH or not all(math.isfinite(n) for n in norms) or norms[-1] <= 0:
        return findings
    ratio = depth.first_to_last(norms)
    by_name = {layer.name: layer for layer in getattr(model, "layers", [])}
    layers = [by_name[n] for n in names if n in by_name]
    for kind, hit in (
        ("vanishing_across_depth", lambda r, t: r < t),
        ("exploding_across_depth", lambda r, t: r > t),
    ):
        threshold = thresholds.for_kind(kind)
        if not hit(ratio, threshold):
            continue
        where = names[0]
        for name, n in reversed(list(zip(names, norms))):
            if hit(n / norms[-1], threshold):
                where = name
                break
        findings.append(
            Finding(kind, where, ratio, threshold, advice.depth_advice(kind, model, layers))
        )
    return findings


# -------------------------------------------------------------- non-finite
def non_finite_input_finding(entries):
    """The `non_finite_gradient` finding at `"input"` of a batch with
    `entries` NaN or inf entries."""
    return Finding(
        "non_finite_gradient", "input", float(entries), 0.0, advice.non_finite_advice("input")
    )


def non_finite_finding(names, norms, weight_norms=None):
    """A `non_finite_gradient` finding at the first layer whose gradient norm
    (or, when given, weight norm: a non-finite update was applied) is not
    finite, or None."""
    weight_norms = weight_norms if weight_norms is not None else [0.0] * len(norms)
    for name, n, w in zip(names, norms, weight_norms):
        if not math.isfinite(n):
            return Finding("non_finite_gradient", name, n, 0.0, advice.non_finite_advice(name))
        if not math.isfinite(w):
            return Finding("non_finite_gradient", name, w, 0.0, advice.non_finite_advice(name))
    return None


# ---------------------------------------------------------------- training
def training_findings(updates, clipped, skipped, update_ratios, thresholds, measures):
    """The training-time findings of the updates since the previous check.

    Args:
        updates: int, how many updates since the previous check.
        clipped: how many of them the policy changed (None: no policy).
        skipped: how many were skipped (None: nothing can skip them).
        update_ratios: `(largest, layer name, rms)`: the latest update's
            largest per-layer update ratio and its layer (None when not
            known), and the root mean square over the updates since the
            previous check of the update ratio of all variables together
            (None when not known).
            The larger of the two is the measure; `where` is the layer for the
            first, `"optimizer"` for the second.
        thresholds: the `Thresholds`.
        measures: dict that receives `clipped_fraction`, `skipped_fraction`,
            `update_ratio` and `rms_update_ratio`.
    """
    checks = [
        ("frequent_clipping", "clipped_fraction", "optimizer", clipped),
        ("skipped_steps", "skipped_fraction", "optimizer", skipped),
    ]
    values = [
        (kind, key, where, count / updates)
        for kind, key, where, count in checks
        if count is not None and updates > 0
    ]
    largest = _largest_update(update_ratios, measures)
    if largest is not None:
        values.append(("large_updates", None, *largest))
    found = []
    for kind, key, where, value in values:
        if key is not None:
            measures[key] = value
        threshold = thresholds.for_kind(kind)
        if value > threshold:
            found.append(Finding(kind, where, value, threshold, advice.TRAINING_ADVICE[kind]))
    return found


def _largest_update(update_ratios, measures):
    """`(where, value)` of the larger of the two update ratios (None when
    neither is known); both go into `measures`."""
    largest, layer, rms = update_ratios
    candidates = []
    if largest is not None:
        measures["update_ratio"] = largest
        candidates.append((largest, layer))
    if rms is not None:
        measures["rms_update_ratio"] = rms
        candidates.append((rms, "optimizer"))
    if not candidates:
        return None
    value, where = max(candidates, key=lambda c: c[0])
    return where, value
