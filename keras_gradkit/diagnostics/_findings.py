"""Findings: what is wrong with a model's gradients, where, and what to do.

Each kind comes from one documented measure, computed in `_time` (through
time) and `_depth` (across depth) or read from the recorded training steps;
`keras_gradkit.diagnose` and `GradientBoard` turn their measures into
findings with the functions below, so both judge the same numbers the same
way.
"""

import dataclasses
import math
from typing import NamedTuple

import keras
import numpy as np

from keras_gradkit.diagnostics import _depth, _time

GUIDE = "guides/diagnosing.md"

# The earliest (latest) steps of a sequence: the first (last) tenth of its
# unmasked steps, at least one.
EDGE_FRACTION = 0.1

# The depth kinds need this many layers with weights: between two layers the
# ratio is one of parameter counts and input scales, not of depth.
MIN_DEPTH = 3

INIT_KINDS = (
    "vanishing_through_time",
    "exploding_through_time",
    "vanishing_across_depth",
    "exploding_across_depth",
    "non_finite_gradient",
)
TRAINING_KINDS = ("large_updates", "frequent_clipping", "skipped_steps")
KINDS = INIT_KINDS + TRAINING_KINDS

# Below the threshold is a finding for these; above it for the others.
_BELOW = {"vanishing_through_time", "vanishing_across_depth"}


class GradientWarning(UserWarning):
    """Warned by `GradientBoard` once per new `(kind, where)` finding."""


class GradientError(RuntimeError):
    """Raised by `GradientBoard(raise_on=...)` when a listed finding appears.

    Raising (rather than setting `model.stop_training`) ends `fit` without
    `on_train_end`, so `keras.callbacks.BackupAndRestore` keeps its backup.

    Args:
        message: str, what was found.
        findings: the `Finding`s that raised it.
    """

    def __init__(self, message, findings=()):
        super().__init__(message)
        self.findings = list(findings)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Where a measure becomes a finding. The defaults flag Keras's `LSTM`
    and `GRU` on the adding problem at T = 500 and a 20-layer sigmoid MLP at
    initialization, and not an IndRNN with the long-memory initialization, a
    stack of 12 `ResidualIndRNN` blocks or a small CNN (see the guide,
    "Diagnosing gradients").

    Args:
        vanishing_through_time: float in (0, 1): a finding when the mean
            gradient norm of the earliest steps of a sequence (the first
            tenth of its unmasked steps, at least one) is below this
            fraction of its largest step's. Defaults to 1e-3.
        exploding_through_time: float > 1: a finding when the earliest
            steps' mean is above this multiple of the latest steps' (the last
            tenth). Defaults to 100.
        vanishing_across_depth: float in (0, 1): a finding when the gradient
            norm of the first layer with weights is below this fraction of the
            last layer's (models with at least three layers with weights).
            Defaults to 1e-3.
        exploding_across_depth: float > 1: a finding when the first layer's
            gradient norm is above this multiple of the last layer's.
            Defaults to 100.
        update_ratio: float > 0: a finding when the latest update changes a
            layer's weights by more than this fraction of their norm,
            `|w_new - w_old| / |w_new|` over the layer's variables, or when
            the root mean square of that ratio over the updates since the
            previous check, all variables together, is above it (one update
            that moves the weights by their own size, among 30, is 0.18).
            Defaults to 0.1.
        clipped_fraction: float in (0, 1]: a finding when the clipping
            policy changed more than this fraction of the updates since the
            previous check. Defaults to 0.5.
        skipped_fraction: float in (0, 1]: a finding when more than this
            fraction of the updates since the previous check were skipped
            (non-finite gradients). Defaults to 0.25.
    """

    vanishing_through_time: float = 1e-3
    exploding_through_time: float = 100.0
    vanishing_across_depth: float = 1e-3
    exploding_across_depth: float = 100.0
    update_ratio: float = 0.1
    clipped_fraction: float = 0.5
    skipped_fraction: float = 0.25

    def __post_init__(self):
        ranges = {
            "vanishing_through_time": (0.0, 1.0, False),
            "exploding_through_time": (1.0, math.inf, False),
            "vanishing_across_depth": (0.0, 1.0, False),
            "exploding_across_depth": (1.0, math.inf, False),
            "update_ratio": (0.0, math.inf, False),
            "clipped_fraction": (0.0, 1.0, True),
            "skipped_fraction": (0.0, 1.0, True),
        }
        for name, (low, high, closed) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise TypeError(
                    f"Argument `{name}` must be a float. Received: {name}={value!r} of type "
                    f"{type(value).__name__}"
                )
            value = float(value)
            if not (low < value and (value <= high if closed else value < high)):
                bound = "]" if closed else ")"
                raise ValueError(
                    f"Argument `{name}` must be in ({low:g}, {high:g}{bound}. Received: {name}={value!r}"
                )
            object.__setattr__(self, name, value)

    def to_dict(self):
        """The thresholds as a dict (`Thresholds(**d)` gives them back)."""
        return dataclasses.asdict(self)

    def for_kind(self, kind):
        """The threshold of a kind of finding."""
        name = {
            "large_updates": "update_ratio",
            "frequent_clipping": "clipped_fraction",
            "skipped_steps": "skipped_fraction",
        }.get(kind, kind)
        return getattr(self, name, 0.0)


def check_thresholds(thresholds):
    """`thresholds` (None: the defaults; a dict: `Thresholds(**d)`) as
    `Thresholds`; a `TypeError` otherwise."""
    if thresholds is None:
        return Thresholds()
    if isinstance(thresholds, dict):
        return Thresholds(**thresholds)
    if not isinstance(thresholds, Thresholds):
        raise TypeError(
            "Argument `thresholds` must be None, a keras_gradkit.diagnostics.Thresholds or its "
            "`to_dict()`. "
            f"Received: thresholds={thresholds!r} of type {type(thresholds).__name__}"
        )
    return thresholds


def check_kinds(name, kinds):
    """`kinds` (a kind or a sequence of them) as a tuple; unknown kinds are refused."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, (tuple, list, set, frozenset)):
        raise TypeError(
            f"Argument `{name}` must be a kind of finding or a sequence of them. "
            f"Received: {name}={kinds!r} of type {type(kinds).__name__}"
        )
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(
            f"Argument `{name}` holds unknown kinds {unknown}; the kinds are {list(KINDS)}. "
            f"Received: {name}={kinds!r}"
        )
    return tuple(kinds)


class Finding(NamedTuple):
    """One thing wrong with the gradients.

    Attributes:
        kind: str, one of `keras_gradkit.diagnostics.KINDS`.
        where: str, the layer's name, `"input"` (the model input, or the
            batch itself for a non-finite batch) or `"optimizer"` (for the
            clipping and skipped-step kinds, which concern the whole update).
        value: float, the measure (see `Thresholds`).
        threshold: float, the threshold it passed.
        advice: str, the remedy and the guide section that explains it.
    """

    kind: str
    where: str
    value: float
    threshold: float
    advice: str

    def to_dict(self):
        return dict(self._asdict())


class Report:
    """What `keras_gradkit.diagnose` (or `GradientBoard`) found.

    Attributes:
        findings: list of `Finding`, in the order of `KINDS`.
        measures: dict of the numbers behind them: `"gradient_norm"` (the
            global norm), `"depth"` (`layers`, `norms`, `first_to_last`),
            `"time"` (`{sequence: {"steps", "early", "late", "peak",
            "reach"}}`), and during training `"update_ratio"`, `"rms_update_ratio"`,
            `"clipped_fraction"`, `"skipped_fraction"`.
        notes: list of str, what could not be measured and why.

    Args:
        findings: the findings.
        measures: the measures.
        notes: the notes.
    """

    def __init__(self, findings=(), measures=None, notes=()):
        self.findings = list(findings)
        self.measures = dict(measures or {})
        self.notes = list(notes)

    @property
    def ok(self):
        """True when there is no finding."""
        return not self.findings

    def kinds(self):
        """The kinds found, in order, each once."""
        return list(dict.fromkeys(f.kind for f in self.findings))

    def to_dict(self):
        """`{"ok", "findings": [dict], "measures", "notes"}`, plain Python
        values (JSON-safe but for non-finite floats), for loggers."""
        return {
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "measures": _plain(self.measures),
            "notes": list(self.notes),
        }

    def __repr__(self):
        return f"<Report ok={self.ok} kinds={self.kinds()}>"

    def __str__(self):
        lines = []
        if self.ok:
            lines.append("Gradient report: no finding.")
        else:
            n = len(self.findings)
            lines.append(f"Gradient report: {n} finding{'s' if n > 1 else ''}.")
            rows = [("kind", "where", "value", "threshold")] + [
                (
                    f.kind,
                    f.where,
                    f"{f.value:.3g}",
                    ("< " if f.kind in _BELOW else "> ") + f"{f.threshold:.3g}",
                )
                for f in self.findings
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for i, row in enumerate(rows):
                lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
                if i == 0:
                    lines.append("  " + "  ".join("-" * w for w in widths))
            lines.append("Advice:")
            for i, f in enumerate(self.findings, 1):
                lines.append(f"  {i}. {f.kind} at {f.where}: {f.advice}")
        measured = _describe_measures(self.measures)
        if measured:
            lines.append("Measured: " + measured)
        for note in self.notes:
            lines.append(f"Note: {note}")
        return "\n".join(lines)

    def to_markdown(self):
        """The report as Markdown, for TensorBoard's Text dashboard."""
        if self.ok:
            text = "**No finding.**"
        else:
            rows = ["| kind | where | value | threshold | advice |", "|---|---|---:|---:|---|"]
            for f in self.findings:
                sign = "&lt;" if f.kind in _BELOW else "&gt;"
                rows.append(
                    f"| {f.kind} | {f.where} | {f.value:.3g} | {sign} {f.threshold:.3g} | {f.advice} |"
                )
            text = "\n".join(rows)
        measured = _describe_measures(self.measures)
        if measured:
            text += f"\n\nMeasured: {measured}"
        for note in self.notes:
            text += f"\n\nNote: {note}"
        return text


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _describe_measures(measures):
    parts = []
    if "gradient_norm" in measures:
        parts.append(f"global gradient norm {measures['gradient_norm']:.3g}")
    depth = measures.get("depth")
    if depth and len(depth["norms"]) >= 2:
        parts.append(
            f"first/last layer gradient {depth['first_to_last']:.3g} ({len(depth['norms'])} layers)"
        )
    for name, t in measures.get("time", {}).items():
        parts.append(
            f"through time at {name}: earliest/largest {t['early'] / t['peak']:.3g}, "
            f"earliest/latest {t['early'] / t['late']:.3g}, reach {t['reach']} of {t['steps']} steps"
            if t["peak"] > 0 and t["late"] > 0
            else f"through time at {name}: no gradient"
        )
    for key, label in (
        ("update_ratio", "largest update ratio"),
        ("rms_update_ratio", "root mean square update ratio since the previous check"),
        ("clipped_fraction", "clipped fraction"),
        ("skipped_fraction", "skipped fraction"),
    ):
        if key in measures:
            parts.append(f"{label} {measures[key]:.3g}")
    return "; ".join(parts)


# ------------------------------------------------------------------- advice
def _link(section):
    return f"docs/{section}"


_TIME_GATED = (
    "Replace it with `keras_gradkit.layers.IndRNN` and the long-memory recurrent initialization, "
    "|u| from (2^(-1/T), 2^(1/T)) ({indrnn}), or keep it and initialize its gates for long memory: "
    "chrono initialization, `keras_gradkit.layers.{cls}(chrono_timesteps=T)`, or a larger forget "
    "bias ({gates})."
)
_TIME_INDRNN = (
    "Initialize its recurrent weights for long memory, |u| from (2^(-1/T), 2^(1/T)) "
    "(`recurrent_initializer`, {indrnn}), and keep them within the recurrent bound ({bound})."
)
_TIME_OTHER = (
    "A plain recurrence forgets over long sequences: use `keras_gradkit.layers.IndRNN` with the "
    "long-memory recurrent initialization ({indrnn}), or a gated layer with chrono initialization "
    "({gates})."
)


def _recurrent_kind(layer):
    """`"gated"` (LSTM/GRU), `"indrnn"`, `"rnn"` or None, and the class to name."""
    if layer is None:
        return None, None
    cell = getattr(layer, "cell", None)
    if cell is None and hasattr(layer, "forward_layer"):  # Bidirectional
        cell = getattr(layer.forward_layer, "cell", None)
    names = {type(layer).__name__, type(cell).__name__ if cell is not None else ""}
    text = " ".join(names)
    if "IndRNN" in text:
        return "indrnn", "IndRNN"
    if "LSTM" in text:
        return "gated", "LSTM"
    if "GRU" in text:
        return "gated", "GRU"
    return "rnn", type(layer).__name__


def time_advice(kind, layer):
    """The advice for a finding through time at `layer` (None: the model input)."""
    links = {
        "indrnn": _link("guides/indrnn.md#building-a-model"),
        "bound": _link("guides/indrnn.md#the-recurrent-bound"),
        "gates": _link("guides/gate_biases.md#initializers"),
        "clip": _link("guides/clipping.md#policies"),
        "inside": _link("guides/indrnn.md#clipping-inside-the-recurrence"),
        "lr": _link(f"{GUIDE}#learning-rate"),
    }
    family, cls = _recurrent_kind(layer)
    if kind == "vanishing_through_time":
        template = {"gated": _TIME_GATED, "indrnn": _TIME_INDRNN}.get(family, _TIME_OTHER)
        return template.format(cls=cls, **links)
    text = (
        "Bound the gradient: a `keras_gradkit.optimizers.ClippedOptimizer` with `ClipByGlobalNorm` "
        "or `AutoClip` ({clip})"
    )
    if family == "indrnn":
        text += ", the IndRNN's recurrent bound ({bound}) and `grad_clipping` inside the recurrence ({inside})"
    text += "; or a lower learning rate ({lr})."
    return text.format(**links)


_SATURATING = ("sigmoid", "tanh", "hard_sigmoid", "softsign", "softmax")


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def depth_advice(kind, model, layers):
    """The advice for a finding across depth, given the model's layers with weights."""
    saturating = sorted(
        {n for n in (_activation_name(layer) for layer in layers) if n in _SATURATING}
    )
    recurrent = sum(1 for layer in layers if _recurrent_kind_of(layer))
    residual = _link("guides/depth.md#the-residual-block")
    if kind == "vanishing_across_depth":
        parts = []
        if saturating:
            names = ", ".join(f"`{n}`" for n in saturating)
            parts.append(
                f"Its layers use the saturating activation {names}: use ReLU instead "
                f"({_link(GUIDE + '#saturating-activations')}), with He initialization "
                f"({_link(GUIDE + '#initialization')})."
            )
        if recurrent >= 2:
            parts.append(
                "Stack recurrent layers as `keras_gradkit.layers.ResidualIndRNN` blocks, whose identity "
                f"shortcut carries the gradient back ({residual})."
            )
        else:
            parts.append(
                f"Add residual connections, `x + F(x)`, whose identity shortcut carries the gradient back "
                f"({_link(GUIDE + '#residual-connections')})."
            )
        if not saturating:
            parts.append(
                "Normalize: `keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
                f"({_link('guides/normalization.md#groupnorm')}); He or orthogonal initialization "
                f"({_link(GUIDE + '#initialization')})."
            )
        return " ".join(parts)
    return (
        "The early layers get far larger gradients than the last: use He or orthogonal initialization "
        f"at its unit scale ({_link(GUIDE + '#initialization')}), normalize with "
        "`keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
        f"({_link('guides/normalization.md#groupnorm')}), and bound the update with a clipping policy "
        f"({_link('guides/clipping.md#policies')})."
    )


def _recurrent_kind_of(layer):
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    return any(
        isinstance(sub, keras.layers.RNN) for sub in getattr(layer, "_flatten_layers", lambda: [])()
    )


def non_finite_advice(where):
    if where == "input":
        return (
            "The batch itself holds NaN or inf: find and clean those values before training "
            f"({_link(GUIDE + '#non-finite-data')})."
        )
    return (
        "Lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}); skip non-finite steps and bound the rest with "
        "`keras_gradkit.clipping.chain(SkipNonFinite(), ClipByGlobalNorm(...))` "
        f"({_link('guides/clipping.md#policies')}); under mixed precision train with the loss scale, "
        f"`keras.optimizers.LossScaleOptimizer` ({_link(GUIDE + '#loss-scale')})."
    )


TRAINING_ADVICE = {
    "large_updates": (
        "One step changes the weights by a large fraction of their size: lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}), or bound each update relative to its weights with "
        f"`keras_gradkit.clipping.AdaptiveClip` ({_link('guides/clipping.md#policies')})."
    ),
    "frequent_clipping": (
        "The clip binds on most updates, so it sets their size rather than the gradient: lower the "
        f"learning rate ({_link(GUIDE + '#learning-rate')}), raise the threshold, or let "
        f"`keras_gradkit.clipping.AutoClip` set it from the gradients' history "
        f"({_link('guides/clipping.md#policies')})."
    ),
    "skipped_steps": (
        "Updates are skipped for non-finite gradients: lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}); under mixed precision check the loss scale "
        f"({_link(GUIDE + '#loss-scale')})."
    ),
}


# ------------------------------------------------------------------- checks
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
        "reach": int(_time.reach(norms)),
    }


def time_findings(model, results, thresholds):
    """Findings through time from `TimeProbe` results `[(name, norms, reach)]`.

    Returns `(findings, summaries)`. A recurrent layer's sequence names the
    layer; the model input is named only when no recurrent layer's sequence
    shows the same kind (it is then the same evidence)."""
    summaries, findings = {}, []
    by_name = {layer.name: layer for layer in getattr(model, "layers", [])}
    recurrent = _time.recurrent_layers(model)
    for name, norms, _ in results:
        summary = time_summary(norms)
        if summary is None:
            continue
        summaries[name] = summary
    for kind in ("vanishing_through_time", "exploding_through_time"):
        threshold = thresholds.for_kind(kind)
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
        layers_found = [f for f in found if f[0] != "input"]
        for name, value in layers_found or found:
            layer = by_name.get(name) if name != "input" else (recurrent[0] if recurrent else None)
            findings.append(Finding(kind, name, value, threshold, time_advice(kind, layer)))
    return findings, summaries


def depth_findings(model, names, norms, thresholds):
    """Findings across depth from the layer norms of `_depth.layer_norms`, in model order.

    `where` is the first layer that the backward pass, going from the last
    layer toward the input, reaches past the threshold."""
    findings = []
    if len(norms) < MIN_DEPTH or not all(math.isfinite(n) for n in norms) or norms[-1] <= 0:
        return findings
    ratio = _depth.first_to_last(norms)
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
        findings.append(Finding(kind, where, ratio, threshold, depth_advice(kind, model, layers)))
    return findings


def non_finite_finding(names, norms, weight_norms=None):
    """A `non_finite_gradient` finding at the first layer whose gradient norm
    (or, when given, weight norm: a non-finite update was applied) is not
    finite, or None."""
    weight_norms = weight_norms if weight_norms is not None else [0.0] * len(norms)
    for name, n, w in zip(names, norms, weight_norms):
        if not math.isfinite(n):
            return Finding("non_finite_gradient", name, n, 0.0, non_finite_advice(name))
        if not math.isfinite(w):
            return Finding("non_finite_gradient", name, w, 0.0, non_finite_advice(name))
    return None


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
    found = []
    checks = [
        ("frequent_clipping", "clipped_fraction", "optimizer", clipped),
        ("skipped_steps", "skipped_fraction", "optimizer", skipped),
    ]
    values = [
        (kind, key, where, count / updates)
        for kind, key, where, count in checks
        if count is not None and updates > 0
    ]
    largest, layer, rms = update_ratios
    candidates = []
    if largest is not None:
        measures["update_ratio"] = largest
        candidates.append((largest, layer))
    if rms is not None:
        measures["rms_update_ratio"] = rms
        candidates.append((rms, "optimizer"))
    if candidates:
        value, where = max(candidates, key=lambda c: c[0])
        values.append(("large_updates", None, where, value))
    for kind, key, where, value in values:
        if key is not None:
            measures[key] = value
        threshold = thresholds.for_kind(kind)
        if value > threshold:
            found.append(Finding(kind, where, value, threshold, TRAINING_ADVICE[kind]))
    return found


def sort_findings(findings):
    return sorted(findings, key=lambda f: KINDS.index(f.kind))
