"""How well the gradient doctor diagnoses the evaluation set of issue 32.

The set (`benchmarks/doctor_programs.py`): small buggy Keras programs in the
style of the questions users post, each with its fix, and healthy programs.
Per program, the findings of `keras_gradkit.diagnose(model, x[:b], y[:b])`
on the first batch (`b` the program's batch size), then of a short `fit`
with `keras_gradkit.callbacks.GradientBoard(histogram_freq=1,
write_plots=False)`, which runs its checks at the end of every epoch (3-5
checks; recurrent models with a time probe of that batch) and keeps every
finding it saw in `board.findings`. The kinds found are the union of both.
An error raised by `diagnose` or `fit` (an invalid program Keras refuses) is
recorded and the other one still runs.

Per pair it prints the kinds found on the buggy and on the fixed version,
whether one of them is a kind the pair counts as right (`category`), and
whether the advice of a finding on the buggy version names the fix (holds
one of its `fix_keywords`, case aside); per healthy program the kinds found.
Then the summary:

    bugs found X/N (P%), right kind Y/N, fixed flagged F/N, healthy flagged H/M, advice names fix A/N

The doctor's targets (issue 32): at least 90% of the bugs found, at most 10%
of the fixed versions and no healthy program flagged, the advice naming the
fix for at least 75%.

    python benchmarks/doctor_eval.py                        # TensorFlow, all programs
    python benchmarks/doctor_eval.py --backend jax --only softmax_one_unit_binary
    python benchmarks/doctor_eval.py --markdown --json runs/doctor_eval.json
    python benchmarks/doctor_eval.py --advice               # each finding and its advice too
"""

import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from typing import NamedTuple

import _per_backend


class Outcome(NamedTuple):
    """What the doctor said about one program."""

    name: str
    pair: str
    kind: str  # "bug", "fixed", "healthy"
    kinds: tuple  # the kinds found, diagnose's and GradientBoard's, each once
    diagnose_kinds: tuple
    board_kinds: tuple
    findings: tuple  # ((kind, where, advice), ...), diagnose's first
    hit: bool  # a kind found is one of the pair's category
    names_fix: bool  # the advice of a finding names the fix
    errors: tuple  # ("diagnose: ...", "fit: ...")
    seconds: float

    def to_dict(self):
        d = self._asdict()
        d["findings"] = [dict(zip(("kind", "where", "advice"), f)) for f in self.findings]
        return d


def _error(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def names_fix(findings, keywords):
    """Whether the advice of one of `findings` (`(kind, where, advice)`) holds one of `keywords`."""
    lowered = [k.lower() for k in keywords]
    return any(k in advice.lower() for _, _, advice in findings for k in lowered)


def evaluate(spec, log_dir, **fit):
    """Builds `spec`'s program, diagnoses its first batch, fits it with
    GradientBoard (logs under `log_dir`) and returns the `Outcome`; `fit`
    overrides the program's own arguments of `model.fit` (e.g. `epochs=2`)."""
    import keras

    import keras_gradkit as gk

    start = time.perf_counter()
    keras.utils.clear_session(free_memory=False)
    errors, diagnosed, seen = [], [], []
    with warnings.catch_warnings():
        # GradientWarning, and Keras's own warnings about the buggy programs.
        warnings.simplefilter("ignore")
        program = spec.build()
        fit = {**program.fit, **fit}
        batch = fit.get("batch_size", 32)
        xb, yb = program.x[:batch], program.y[:batch]
        try:
            report = gk.diagnose(program.model, xb, yb)
            diagnosed = [(f.kind, f.where, f.advice) for f in report.findings]
        except Exception as exc:  # a program Keras refuses: recorded
            errors.append("diagnose: " + _error(exc))
        board = gk.callbacks.GradientBoard(
            log_dir,
            histogram_freq=1,
            write_plots=False,
            time_probe=(xb, yb) if program.time_probe else None,
        )
        try:
            program.model.fit(
                program.x, program.y, verbose=0, shuffle=False, callbacks=[board], **fit
            )
        except Exception as exc:
            errors.append("fit: " + _error(exc))
        seen = [(f.kind, f.where, f.advice) for f in board.findings]
    diagnose_kinds = tuple(dict.fromkeys(k for k, _, _ in diagnosed))
    board_kinds = tuple(dict.fromkeys(k for k, _, _ in seen))
    findings = tuple(diagnosed + seen)
    kinds = tuple(dict.fromkeys(diagnose_kinds + board_kinds))
    return Outcome(
        name=spec.name,
        pair=spec.pair,
        kind=spec.kind,
        kinds=kinds,
        diagnose_kinds=diagnose_kinds,
        board_kinds=board_kinds,
        findings=findings,
        hit=any(k in spec.category for k in kinds),
        names_fix=names_fix(findings, spec.fix_keywords),
        errors=tuple(errors),
        seconds=time.perf_counter() - start,
    )


class Summary(NamedTuple):
    bugs: int
    found: int
    right_kind: int
    fixed: int
    fixed_flagged: int
    healthy: int
    healthy_flagged: int
    names_fix: int

    def line(self):
        percent = 100.0 * self.found / self.bugs if self.bugs else 0.0
        return (
            f"bugs found {self.found}/{self.bugs} ({percent:.0f}%), "
            f"right kind {self.right_kind}/{self.bugs}, "
            f"fixed flagged {self.fixed_flagged}/{self.fixed}, "
            f"healthy flagged {self.healthy_flagged}/{self.healthy}, "
            f"advice names fix {self.names_fix}/{self.bugs}"
        )


def summarize(outcomes):
    bugs = [o for o in outcomes if o.kind == "bug"]
    fixed = [o for o in outcomes if o.kind == "fixed"]
    healthy = [o for o in outcomes if o.kind == "healthy"]
    return Summary(
        bugs=len(bugs),
        found=sum(bool(o.kinds) for o in bugs),
        right_kind=sum(o.hit for o in bugs),
        fixed=len(fixed),
        fixed_flagged=sum(bool(o.kinds) for o in fixed),
        healthy=len(healthy),
        healthy_flagged=sum(bool(o.kinds) for o in healthy),
        names_fix=sum(o.names_fix for o in bugs),
    )


def _kinds_text(outcome):
    if outcome is None:
        return ""
    text = ", ".join(outcome.kinds) if outcome.kinds else "nothing"
    if outcome.errors:
        text += " (" + "; ".join(e.split(":")[0] + " raised" for e in outcome.errors) + ")"
    return text


def table_rows(outcomes):
    """`[program, bug kinds found, fixed kinds found, expected kind hit?, advice names fix?]`."""
    by_pair = {}
    for o in outcomes:
        by_pair.setdefault(o.pair, {})[o.kind] = o
    rows = []
    for pair, found in by_pair.items():
        if "healthy" in found:
            o = found["healthy"]
            rows.append([f"{pair} (healthy)", _kinds_text(o), "", "", ""])
            continue
        bug, fixed = found.get("bug"), found.get("fixed")
        rows.append(
            [
                pair,
                _kinds_text(bug),
                _kinds_text(fixed),
                "" if bug is None else ("yes" if bug.hit else "no"),
                "" if bug is None else ("yes" if bug.names_fix else "no"),
            ]
        )
    return rows


HEADER = [
    "program",
    "bug kinds found",
    "fixed kinds found",
    "expected kind hit?",
    "advice names fix?",
]


def format_table(rows, markdown=False):
    if markdown:

        def cell(text):
            return text.replace("|", "\\|")

        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [HEADER] + rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(HEADER, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = _per_backend.parser(__doc__)
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="NAME", help="programs or pairs to run"
    )
    parser.add_argument("--markdown", action="store_true", help="the table in Markdown")
    parser.add_argument("--json", metavar="PATH", help="write every outcome as JSON to PATH")
    parser.add_argument("--advice", action="store_true", help="print each finding and its advice")
    parser.add_argument("--log-dir", help="GradientBoard's logs (default: a temporary directory)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if _per_backend.dispatch(args.backend, __file__, argv):
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import doctor_programs
    import keras

    specs = doctor_programs.by_name(args.only)
    print(
        f"backend {keras.backend.backend()}, Keras {keras.__version__}, {len(specs)} programs",
        flush=True,
    )
    start = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.log_dir or tmp
        for i, spec in enumerate(specs, 1):
            try:
                outcome = evaluate(spec, os.path.join(root, spec.name.replace("/", "_")))
            except Exception:  # a program that cannot be built: a bug of this set
                traceback.print_exc()
                print(f"[{i}/{len(specs)}] {spec.name}: could not be built", flush=True)
                continue
            outcomes.append(outcome)
            errors = f"; {'; '.join(outcome.errors)}" if outcome.errors else ""
            print(
                f"[{i}/{len(specs)}] {spec.name}: {_kinds_text(outcome)}"
                f" ({outcome.seconds:.1f} s){errors}",
                flush=True,
            )
            if args.advice:
                for kind, where, advice in outcome.findings:
                    print(f"    {kind} at {where}: {advice}")
    print()
    print(format_table(table_rows(outcomes), markdown=args.markdown))
    print()
    print(summarize(outcomes).line())
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "backend": keras.backend.backend(),
                    "summary": summarize(outcomes)._asdict(),
                    "outcomes": [o.to_dict() for o in outcomes],
                },
                f,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
