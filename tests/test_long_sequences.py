"""What the guide "Recurrent layers for long sequences" relies on: each
backend says which mode of the linear recurrences `mode="auto"` runs, the
layers read it from there, and every model of `examples/adding_problem.py`
builds."""

import ast
import importlib.util
import os
import pathlib
import sys

import pytest

from keras_gradkit import backend
from keras_gradkit.layers import LRU, MinGRU, MinLSTM
from keras_gradkit.layers.min_rnn import MODES

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEAM = ROOT / "keras_gradkit" / "backend"


def _auto_mode_in_source(path):
    """The value assigned to `AUTO_MODE` in the module at `path`, or None."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "AUTO_MODE" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


@pytest.mark.backend_free
@pytest.mark.parametrize("name", ["tensorflow", "jax", "torch"])
def test_each_backend_names_a_mode_for_auto(name):
    mode = _auto_mode_in_source(SEAM / name / "linear_recurrence.py")
    assert mode in MODES and mode != "auto", mode


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM, LRU], ids=lambda c: c.__name__)
def test_auto_runs_the_running_backends_mode(cls):
    layer = cls(2)
    expected = backend.get("linear_recurrence").AUTO_MODE
    assert layer.mode == "auto"
    assert layer._resolved_mode == expected


def _load_adding_problem():
    examples = str(ROOT / "examples")
    if examples not in sys.path:  # as when the script runs
        sys.path.insert(0, examples)
    spec = importlib.util.spec_from_file_location(
        "example_adding_problem_long", os.path.join(examples, "adding_problem.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_adding_problem_model_builds():
    # Building traces each layer symbolically; the layers' own tests run them.
    module = _load_adding_problem()
    for kind in ("mut1", "mut2", "mut3", "mingru", "minlstm", "lru"):
        args = module.parse_args(["--model", kind])
        assert args.lr == module.DEFAULT_LR[kind] and args.layers == 1
        model = module.build_model(kind, 6, 3, 2 if kind == "lru" else 1)
        assert tuple(model.output.shape) == (None, 1), kind
