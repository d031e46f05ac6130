"""The gradient doctor's evaluation set (`benchmarks/doctor_programs.py`) and
its runner (`benchmarks/doctor_eval.py`): the registry's shape without
building a model, and one bug/fix pair run through the evaluation."""

import os
import sys

import pytest

from keras_gradkit.diagnostics import KINDS

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if BENCHMARKS not in sys.path:  # as when the scripts run: their siblings are importable
    sys.path.insert(0, BENCHMARKS)

import doctor_eval
import doctor_programs

PROGRAMS = doctor_programs.PROGRAMS


def _of_kind(kind):
    return [s for s in PROGRAMS if s.kind == kind]


@pytest.mark.backend_free
def test_registry_holds_30_pairs_and_10_healthy_programs():
    bugs = {s.pair: s for s in _of_kind("bug")}
    fixed = {s.pair: s for s in _of_kind("fixed")}
    assert bugs.keys() == fixed.keys()
    assert len(bugs) >= 30
    assert len(_of_kind("healthy")) >= 10
    for pair, bug in bugs.items():
        # The two versions are one builder, switched by `fixed`.
        assert fixed[pair].builder is bug.builder
        assert fixed[pair].category == bug.category
    assert {s.kind for s in PROGRAMS} == {"bug", "fixed", "healthy"}


@pytest.mark.backend_free
def test_names_are_unique():
    names = [s.name for s in PROGRAMS]
    assert len(names) == len(set(names))
    healthy = {s.pair for s in _of_kind("healthy")}
    assert not healthy & {s.pair for s in _of_kind("bug")}


@pytest.mark.backend_free
def test_each_bug_names_valid_kinds_keywords_and_a_question():
    for spec in _of_kind("bug"):
        assert spec.category, spec.name
        assert set(spec.category) <= set(KINDS), (spec.name, set(spec.category) - set(KINDS))
        assert spec.fix_keywords and all(k.strip() for k in spec.fix_keywords), spec.name
        assert len(spec.question.splitlines()) >= 3, spec.name  # a title and the story
    for spec in _of_kind("healthy"):
        assert not spec.category and not spec.fix_keywords and spec.question


@pytest.mark.backend_free
def test_every_kind_is_the_right_diagnosis_of_some_bug():
    covered = {k for s in _of_kind("bug") for k in s.category}
    assert set(KINDS) - covered == set()


@pytest.mark.backend_free
def test_by_name_takes_programs_and_pairs():
    pair = _of_kind("bug")[0].pair
    assert [s.kind for s in doctor_programs.by_name([pair])] == ["bug", "fixed"]
    assert [s.name for s in doctor_programs.by_name([f"{pair}/fixed"])] == [f"{pair}/fixed"]
    assert len(doctor_programs.by_name([])) == len(PROGRAMS)
    with pytest.raises(ValueError, match="no_such_program"):
        doctor_programs.by_name(["no_such_program"])


def _outcome(name, kind, kinds=(), hit=False, names_fix=False, errors=()):
    pair = name.split("/")[0]
    findings = tuple((k, "dense", "advice") for k in kinds)
    return doctor_eval.Outcome(
        name, pair, kind, tuple(kinds), tuple(kinds), (), findings, hit, names_fix, errors, 1.0
    )


@pytest.mark.backend_free
def test_summary_line_and_table():
    outcomes = [
        _outcome("a/bug", "bug", ["dead_units"], hit=True, names_fix=True),
        _outcome("a/fixed", "fixed"),
        _outcome("b/bug", "bug", ["large_updates"], errors=("fit: ValueError: x",)),
        _outcome("b/fixed", "fixed", ["large_updates"]),
        _outcome("c/bug", "bug"),
        _outcome("c/fixed", "fixed"),
        _outcome("h", "healthy"),
        _outcome("g", "healthy", ["zero_gradient"]),
    ]
    assert doctor_eval.summarize(outcomes).line() == (
        "bugs found 2/3 (67%), right kind 1/3, fixed flagged 1/3, healthy flagged 1/2, "
        "advice names fix 1/3"
    )
    rows = doctor_eval.table_rows(outcomes)
    assert rows[0] == ["a", "dead_units", "nothing", "yes", "yes"]
    assert rows[1][1] == "large_updates (fit raised)"
    assert rows[3] == ["h (healthy)", "nothing", "", "", ""]
    markdown = doctor_eval.format_table([["x|y", "", "", "", ""]], markdown=True)
    assert markdown.splitlines()[-1] == "| x\\|y |  |  |  |  |"


@pytest.mark.backend_free
def test_names_fix_matches_keywords_without_case():
    findings = [("unscaled_inputs", "input", "Add a keras.layers.Normalization layer.")]
    assert doctor_eval.names_fix(findings, ["normalization"])
    assert not doctor_eval.names_fix(findings, ["learning rate"])
    assert not doctor_eval.names_fix([], ["normalization"])


def test_one_pair_through_the_evaluation(tmp_path):
    # NaN in the features: `diagnose` reports the batch itself, on every backend.
    bug, fixed = doctor_programs.by_name(["nan_in_features"])
    # Two epochs: two checks of GradientBoard, the fewest its training kinds compare.
    found = doctor_eval.evaluate(bug, str(tmp_path / "bug"), epochs=2)
    # PyTorch's binary cross-entropy refuses the NaN predictions: `fit` raises there.
    assert not [e for e in found.errors if e.startswith("diagnose")]
    assert "non_finite_gradient" in found.diagnose_kinds and found.hit and found.names_fix
    assert set(found.kinds) <= set(KINDS)
    cured = doctor_eval.evaluate(fixed, str(tmp_path / "fixed"), epochs=2)
    assert cured.errors == ()
    assert "non_finite_gradient" not in cured.kinds
    assert doctor_eval.summarize([found, cured]).found == 1
