"""What the doctor found: `Finding`, `Report` and how a report reads (text,
Markdown, plain dict), and the warning and error `GradientBoard` raises."""

import os
import re
import sys
from typing import NamedTuple

import numpy as np

from keras_gradkit.diagnostics.thresholds import BELOW, EXACT


class GradientWarning(UserWarning):
    """Warned by `GradientBoard` once per new `(kind, where)` finding, at the
    line of the user's code that called `fit`."""


# Frames in these packages are not the user's: a warning goes to the first
# frame outside them (the line that called `fit`).
_LIBRARY_PACKAGES = ("keras_gradkit", "keras", "tensorflow", "jax", "torch", "optree", "absl")


def user_stacklevel():
    """The `stacklevel` of `warnings.warn` that points at the caller's first
    frame outside Keras, keras_gradkit and the backends (the user's `fit`
    call); called directly by the function that warns."""
    roots = []
    for name in _LIBRARY_PACKAGES:
        module = sys.modules.get(name)
        for path in getattr(module, "__path__", None) or ():
            roots.append(os.path.join(os.path.realpath(path), ""))
    frame, level = sys._getframe(1), 1
    while frame is not None:
        filename = os.path.realpath(frame.f_code.co_filename)
        if not filename.startswith(tuple(roots)) and not filename.startswith("<"):
            return level
        frame, level = frame.f_back, level + 1
    return 1


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
        evidence: dict (None: nothing more), what else the check measured
            that explains the finding: the layers and fractions of dead or
            saturated units behind a vanishing gradient, the layers whose
            gradient is zero and why, the mismatch of an output and its loss.
    """

    kind: str
    where: str
    value: float
    threshold: float
    advice: str
    evidence: dict | None = None

    def to_dict(self):
        d = dict(self._asdict())
        d["evidence"] = _plain(dict(self.evidence or {}))
        return d


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
        lines = ["Gradient report: no finding."] if self.ok else _text_findings(self.findings)
        measured = _describe_measures(self.measures)
        if measured:
            lines.append("Measured: " + measured)
        for note in self.notes:
            lines.append(f"Note: {note}")
        return "\n".join(lines)

    def to_markdown(self):
        """The report as Markdown, for TensorBoard's Text dashboard."""
        text = "**No finding.**" if self.ok else _markdown_findings(self.findings)
        measured = _describe_measures(self.measures)
        if measured:
            text += f"\n\nMeasured: {_markdown_prose(measured)}"
        for note in self.notes:
            text += f"\n\nNote: {_markdown_prose(note)}"
        return text


def _threshold_text(f):
    """`"< 0.001"`, `"> 100"`, or `"-"` for a kind without a threshold."""
    if f.kind in EXACT:
        return "-"
    return ("< " if f.kind in BELOW else "> ") + f"{f.threshold:.3g}"


def _text_findings(findings):
    """The lines of the findings' table and their advice, as plain text."""
    n = len(findings)
    lines = [f"Gradient report: {n} finding{'s' if n > 1 else ''}."]
    rows = [("kind", "where", "value", "threshold")] + [
        (f.kind, f.where, f"{f.value:.3g}", _threshold_text(f)) for f in findings
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append("Advice:")
    for i, f in enumerate(findings, 1):
        lines.append(f"  {i}. {f.kind} at {f.where}: {f.advice}")
        evidence = describe_evidence(f.evidence)
        if evidence:
            lines.append(f"     Evidence: {evidence}")
    return lines


_URL_IN_PARENTHESES = re.compile(r"\((https?://[^\s()]+)\)")
# What Markdown would read as structure inside a paragraph of prose.
_MARKDOWN_SPECIAL = re.compile(r"([\\|*_\[\]>#])")


def _markdown_prose(text):
    """`text` as a Markdown paragraph that renders as written: code spans
    kept, other Markdown characters escaped, `(url)` made a link."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        # re.split with one group: prose at even indices, URLs at odd ones.
        pieces = _URL_IN_PARENTHESES.split(parts[i])
        for j in range(0, len(pieces), 2):
            pieces[j] = _MARKDOWN_SPECIAL.sub(r"\\\1", pieces[j]).replace("<", "&lt;")
        for j in range(1, len(pieces), 2):
            pieces[j] = f"([guide]({pieces[j]}))"
        parts[i] = "".join(pieces)
    return "`".join(parts)


def _markdown_findings(findings):
    """The findings as Markdown paragraphs, one block per finding (no table:
    TensorBoard's Text dashboard breaks a wide table's words mid-word)."""
    blocks = []
    for i, f in enumerate(findings, 1):
        threshold = "" if f.kind in EXACT else f", threshold {_threshold_text(f)}"
        head = f"**{i}. `{f.kind}` at `{f.where}`**: value {f.value:.3g}{threshold}"
        block = [head.replace("< ", "&lt; ").replace("> ", "&gt; "), _markdown_prose(f.advice)]
        evidence = describe_evidence(f.evidence)
        if evidence:
            block.append("Evidence: " + _markdown_prose(evidence))
        blocks.append("\n\n".join(block))
    return "\n\n".join(blocks)


def describe_evidence(evidence):
    """A finding's evidence as one line of text (empty when there is none)."""
    parts = []
    for key, value in (evidence or {}).items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {_number(v)}" for k, v in value.items())
            parts.append(f"{key.replace('_', ' ')}: {inner}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key.replace('_', ' ')}: {', '.join(str(v) for v in value)}")
        else:
            parts.append(f"{key.replace('_', ' ')}: {_number(value)}")
    return "; ".join(parts)


def _number(value):
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


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
