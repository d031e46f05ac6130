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

from keras_gradkit.diagnostics import advice, depth, graph, time_probe
from keras_gradkit.diagnostics.report import Finding, Report
from keras_gradkit.diagnostics.thresholds import KINDS, check_thresholds

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
        clip_shrink: float, over the applied updates since the previous
            check, the sum of the global norms after the policy over the sum
            before it (1: the policy changed nothing; None when not known).
        intended_clipped: float, the fraction of updates the policy clips by
            design (`AutoClip(percentile=p)`: 1 - p / 100; None when it has
            no such intent).
        unchanged_layers: the layers with trainable weights whose weights
            are exactly the same as at the previous check.
        loss_change: float, `|loss - first loss| / |first loss|` of the loss
            Keras logs, against the first check's (None before the second).
        loss_checks: int, how many checks that change spans.
    """

    updates: int
    clipped: int | None = None
    skipped: int | None = None
    update_ratio: float | None = None
    update_ratio_layer: str | None = None
    rms_update_ratio: float | None = None
    clip_shrink: float | None = None
    intended_clipped: float | None = None
    unchanged_layers: tuple = ()
    loss_change: float | None = None
    loss_checks: int = 0


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
    activations=None,
    scales=None,
    mismatches=None,
    at_initialization=False,
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
        activations: None, or the `activations.ActivationMeasures` of one
            forward pass over the batch (dead and saturated units, the first
            non-finite layer output).
        scales: None, or the `data.Scale`s of the inputs and targets.
        mismatches: None, or the `data.Mismatch`es of the outputs and the loss.
        at_initialization: bool, no update has been applied yet (no advice
            then names the learning rate).

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
    notes = list(notes) + list(getattr(activations, "notes", None) or [])
    findings = [mismatch_finding(m) for m in mismatches or ()]
    findings += unscaled_findings(scales or (), thresholds, measures)
    if not layer_names and getattr(model, "layers", None):
        findings.append(
            Finding(
                "zero_gradient",
                "model",
                0.0,
                0.0,
                advice.no_trainable_advice(),
                {"layers": []},
            )
        )
    forward = non_finite_forward_finding(activations, at_initialization)
    non_finite = _non_finite(layer_names, gradient_norms, weight_norms, skipped, at_initialization)
    weights_broken = weight_norms is not None and not all(map(math.isfinite, weight_norms))
    if forward is not None and not (weights_broken and non_finite is not None):
        # The forward pass explains a non-finite gradient, unless the weights
        # are already not finite: then a non-finite update broke them.
        findings.append(forward)
    elif non_finite is not None:
        findings.append(non_finite)
    else:
        findings += _gradient_findings(
            model,
            layer_names,
            gradient_norms,
            time_results,
            thresholds,
            measures,
            activations,
            mismatches or (),
            at_initialization,
        )
    if training is not None:
        findings += training_findings(
            training.updates,
            training.clipped,
            training.skipped,
            (training.update_ratio, training.update_ratio_layer, training.rms_update_ratio),
            thresholds,
            measures,
            policy=(training.clip_shrink, training.intended_clipped),
        )
        zero = any(f.kind == "zero_gradient" for f in findings)
        findings += progress_findings(training, zero, thresholds, measures)
    return Report(sort_findings(findings), measures, notes)


def _non_finite(names, norms, weight_norms, skipped, at_initialization=False):
    """The `non_finite_gradient` finding of the check, or None."""
    if not skipped:
        return non_finite_finding(names, norms, weight_norms, at_initialization)
    if weight_norms is None:
        return None
    # A step the LossScaleOptimizer skipped is not finite by design (it
    # counts in skipped_steps), but the weights themselves must stay finite.
    return non_finite_finding(names, [0.0] * len(names), weight_norms)


def _gradient_findings(
    model,
    names,
    norms,
    time_results,
    thresholds,
    measures,
    activations=None,
    mismatches=(),
    at_initialization=False,
):
    """The findings of finite gradients: through time (when measured), exact
    zeros, the activations, and across depth; a depth finding explained by
    dead or saturated units carries them as its evidence."""
    findings = []
    if time_results is not None:
        found, measures["time"] = time_findings(model, time_results, thresholds, at_initialization)
        findings += found
    units = activation_findings(activations, thresholds, measures, at_initialization)
    zero = zero_gradient_finding(names, norms, activations, mismatches)
    if zero is not None:
        findings.append(zero)
        # A layer with no gradient at all is the zero gradient, not a depth
        # ratio; dead units that explain it are in its evidence.
        if str(zero.evidence.get("cause", "")).startswith("all units"):
            units = [f for f in units if f.kind != "dead_units"]
        return findings + units
    depth_found = depth_findings(model, names, norms, thresholds, units)
    explained = {k for f in depth_found for k in (f.evidence or {})}
    return findings + depth_found + [f for f in units if f.kind not in explained]


def sort_findings(findings):
    """The findings in the order of `KINDS`."""
    return sorted(findings, key=lambda f: KINDS.index(f.kind))


# ------------------------------------------------------------ through time
def time_summary(norms):
    """`time_probe.summarize` of one probed sequence's aligned profile (NaN
    entries left out); None when not finite or shorter than two steps."""
    return time_probe.summarize(norms)


def time_findings(model, results, thresholds, at_initialization=False):
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
            text = advice.time_advice(kind, layer, at_initialization)
            findings.append(Finding(kind, name, value, threshold, text))
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
def depth_findings(model, names, norms, thresholds, units=()):
    """Findings across depth from the layer norms of `depth.layer_norms`, in model order.

    `where` is the first layer that the backward pass, going from the last
    layer toward the input, reaches past the threshold. `units`: the
    dead and saturated units findings of the same batch, which explain a
    vanishing gradient (they go into its evidence)."""
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
        evidence = {}
        if kind == "vanishing_across_depth":
            evidence = {f.kind: dict(f.evidence["layers"]) for f in units}
        text = advice.depth_advice(kind, model, layers, evidence)
        findings.append(Finding(kind, where, ratio, threshold, text, evidence or None))
    return findings


# -------------------------------------------------------------- non-finite
def non_finite_input_finding(entries):
    """The `non_finite_gradient` finding at `"input"` of a batch with
    `entries` NaN or inf entries."""
    return Finding(
        "non_finite_gradient", "input", float(entries), 0.0, advice.non_finite_advice("input")
    )


def non_finite_finding(names, norms, weight_norms=None, at_initialization=False):
    """A `non_finite_gradient` finding at the first layer whose gradient norm
    (or, when given, weight norm: a non-finite update was applied) is not
    finite, or None."""
    weight_norms = weight_norms if weight_norms is not None else [0.0] * len(norms)
    for name, n, w in zip(names, norms, weight_norms):
        if not math.isfinite(n):
            text = advice.non_finite_advice(name, at_initialization)
            return Finding("non_finite_gradient", name, n, 0.0, text)
        if not math.isfinite(w):
            return Finding("non_finite_gradient", name, w, 0.0, advice.non_finite_advice(name))
    return None


# ---------------------------------------------------------------- training
def training_findings(
    updates, clipped, skipped, update_ratios, thresholds, measures, policy=(None, None)
):
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
        policy: `(clip_shrink, intended_clipped)` of `TrainingMeasures`:
            `frequent_clipping` is a finding when the clipped fraction is
            above its threshold and either the policy intends no fraction
            and the clip dominates the step (it shrinks the global norm to
            less than `DOMINANT_SHRINK` of itself, over the updates since the
            previous check), or the fraction is more than halfway from what
            the policy intends to all updates.
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
        if value > threshold and (kind != "frequent_clipping" or _clip_binds(value, *policy)):
            found.append(Finding(kind, where, value, threshold, advice.TRAINING_ADVICE[kind]))
    return found


# The clip dominates the step when it leaves less than this fraction of the
# gradient's norm, on average over the updates since the previous check: an
# order of magnitude. `make demo`'s IndRNN, which trains well, leaves about
# a third under ClipByGlobalNorm(10) with Adam (scale-free updates).
DOMINANT_SHRINK = 0.1


def _clip_binds(fraction, shrink, intended):
    """Whether a clipped fraction above its threshold is a finding: the clip
    dominates (no intent), or clips far more than the policy intends."""
    dominant = shrink is None or shrink < DOMINANT_SHRINK
    if intended is not None:
        # Clipping most steps is the policy's design: a finding only when it
        # clips far more than intended and dominates the step as well.
        return fraction > (1.0 + intended) / 2.0 and dominant
    return dominant


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


# ------------------------------------------------------- data and output
def mismatch_finding(mismatch):
    """The `output_loss_mismatch` finding of a `data.Mismatch`."""
    return Finding(
        "output_loss_mismatch",
        mismatch.where,
        1.0,
        0.0,
        advice.mismatch_advice(mismatch.message),
        {"problem": mismatch.problem},
    )


def unscaled_findings(scales, thresholds, measures):
    """`unscaled_inputs` findings of the inputs' and targets' `Scale`s: the
    largest feature's root mean square above the threshold, or the whole
    array's below its inverse. The value is the factor away from 1."""
    threshold = thresholds.for_kind("unscaled_inputs")
    found = []
    for scale in scales:
        measures.setdefault("scales", {})[scale.name] = scale.rms
        large, small = scale.rms > threshold, 0 < scale.overall_rms < 1.0 / threshold
        if not (large or small):
            continue
        targets = scale.name == "targets"
        value = scale.rms if large else 1.0 / scale.overall_rms
        rms = scale.rms if large else scale.overall_rms
        text = advice.unscaled_advice(scale.name, rms, scale.feature, targets)
        evidence = {"rms": rms, "feature": scale.feature}
        found.append(Finding("unscaled_inputs", scale.name, value, threshold, text, evidence))
    return found


# ------------------------------------------------------------ activations
def non_finite_forward_finding(activations, at_initialization):
    """A `non_finite_forward` finding at the first layer whose output is not
    finite on the batch, or None."""
    layer = getattr(activations, "non_finite_layer", None)
    if layer is None:
        return None
    text = advice.non_finite_forward_advice(
        layer,
        activations.non_finite_activation,
        activations.non_finite_initializer,
        at_initialization,
    )
    return Finding("non_finite_forward", layer, math.inf, 0.0, text)


# Fewer rows than this and a healthy ReLU unit is often 0 for all of them by
# chance: dead units are not judged on such a batch.
MIN_DEAD_ROWS = 16


def judgeable_activations(activations, rows):
    """`activations` without the dead-unit fractions when the batch has fewer
    than `MIN_DEAD_ROWS` rows (a note says so)."""
    if activations is None or rows >= MIN_DEAD_ROWS:
        return activations
    if not any(layer.dead_fraction is not None for layer in activations.layers):
        return activations
    layers = [layer._replace(dead_fraction=None) for layer in activations.layers]
    note = f"Dead units were not judged: the batch has {rows} rows, fewer than {MIN_DEAD_ROWS}."
    return activations._replace(layers=layers, notes=list(activations.notes) + [note])


def activation_findings(activations, thresholds, measures, at_initialization=False):
    """One `dead_units` and one `saturated_units` finding at most, at the
    layer with the largest fraction past the threshold, the others in its
    evidence (`{"layers": {name: fraction}}`). Saturation is judged on
    hidden layers only."""
    if activations is None:
        return []
    found = []
    for kind, field in (("dead_units", "dead_fraction"), ("saturated_units", "saturated_fraction")):
        threshold = thresholds.for_kind(kind)
        values = {}
        for layer in activations.layers:
            value = getattr(layer, field)
            if value is None or (kind == "saturated_units" and layer.is_output):
                continue
            measures.setdefault(kind, {})[layer.layer] = value
            if value > threshold:
                values[layer.layer] = (layer.activation, value)
        if not values:
            continue
        ranked = dict(sorted(values.items(), key=lambda item: -item[1][1]))
        where, (_, value) = next(iter(ranked.items()))
        if kind == "dead_units":
            text = advice.dead_units_advice(ranked, at_initialization)
        else:
            text = advice.saturated_units_advice(ranked)
        evidence = {"layers": {n: v for n, (_, v) in ranked.items()}}
        found.append(Finding(kind, where, value, threshold, text, evidence))
    return found


def zero_gradient_finding(names, norms, activations=None, mismatches=()):
    """A `zero_gradient` finding when some layers' gradients are exactly zero
    (and finite), with the reason where one is known: a softmax over one
    unit, a layer whose units are all dead, or none of those (a branch the
    loss does not depend on). `where` is the zero layer nearest the output."""
    zero = [n for n, g in zip(names, norms) if g == 0.0]
    if not zero:
        return None
    cause = None
    evidence = {"layers": list(zero)}
    softmax = [m for m in mismatches if m.problem == "softmax_one_unit"]
    dead = [
        layer
        for layer in getattr(activations, "layers", None) or ()
        if layer.dead_fraction is not None and layer.dead_fraction >= 1.0
    ]
    if softmax:
        cause = (
            f"`{softmax[0].where}` applies a softmax over one unit, whose output is the constant "
            "1 whatever its input: " + softmax[0].message
        )
        evidence["cause"] = "softmax over one unit"
    elif dead:
        cause = (
            f"every unit of `{dead[-1].layer}` (`{dead[-1].activation}`) outputs 0 on this batch, "
            "so nothing before it gets a gradient. " + advice._DEAD_REMEDY
        )
        evidence["cause"] = f"all units of {dead[-1].layer} dead"
    elif len(zero) < len(names):
        evidence["cause"] = "not connected to the loss"
    text = advice.zero_gradient_advice(zero, cause)
    return Finding("zero_gradient", zero[-1], 0.0, 0.0, text, evidence)


# --------------------------------------------------------------- progress
# The loss is judged once it spans this many checks.
MIN_LOSS_CHECKS = 2


def progress_findings(training, zero_gradient, thresholds, measures):
    """`unchanged_weights` (layers whose weights did not change since the
    previous check, although updates were applied) and `loss_not_decreasing`
    (the loss has moved by less than the threshold's fraction of its first
    value, over at least `MIN_LOSS_CHECKS` checks, while the gradient is not
    zero: a zero gradient is its own finding)."""
    found = []
    if training.unchanged_layers and training.updates > 0:
        layers = list(training.unchanged_layers)
        found.append(
            Finding(
                "unchanged_weights",
                layers[-1],
                float(training.updates),
                0.0,
                advice.unchanged_advice(layers, training.updates),
                {"layers": layers},
            )
        )
    change = training.loss_change
    if change is not None:
        measures["loss_change"] = change
        threshold = thresholds.for_kind("loss_not_decreasing")
        if training.loss_checks >= MIN_LOSS_CHECKS and change < threshold and not zero_gradient:
            found.append(
                Finding(
                    "loss_not_decreasing",
                    "loss",
                    change,
                    threshold,
                    advice.loss_advice(change, training.loss_checks),
                )
            )
    return found
