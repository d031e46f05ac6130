"""The backend seam: everything that depends on the Keras backend lives in
`keras_gradkit/backend/` (as Keras keeps its own in `keras/src/backend/`).

Outside it, no module imports TensorFlow, JAX, PyTorch or Keras's private
`keras.src`, and none asks which backend runs (`keras.backend.backend()`);
they ask `keras_gradkit.backend.get(module)` for the running backend's
module instead. The check reads the source with `ast` (no tensor is made),
so it also sees imports inside functions.
"""

import ast
import importlib
import pathlib

import keras
import pytest

BACKEND = keras.backend.backend()
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_gradkit"
SEAM = PACKAGE / "backend"
FRAMEWORKS = ("tensorflow", "jax", "torch")
# The modules each backend package must provide, as `backend.get` names them.
BACKEND_MODULES = (
    "distribute",
    "ind_recurrence",
    "linear_recurrence",
    "norms",
    "probe",
    "recording",
    "sparse",
    "step_ops",
)


def _forbidden_module(name):
    """Why importing the module `name` is forbidden outside the seam, or None."""
    top = name.split(".")[0]
    if top in FRAMEWORKS:
        return f"imports {name!r} (a framework)"
    if name == "keras.src" or name.startswith("keras.src."):
        return f"imports {name!r} (Keras's private tree)"
    return None


def _dotted(node):
    """`a.b.c` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def violations(source, filename="<source>"):
    """`(line, reason)` for each use of the backend outside the seam in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reason = _forbidden_module(alias.name)
                if reason:
                    found.append((node.lineno, reason))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            reason = _forbidden_module(node.module)
            if reason:
                found.append((node.lineno, reason))
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full == "keras.src":
                    found.append((node.lineno, "imports 'keras.src' (Keras's private tree)"))
                elif full == "keras.backend.backend":
                    found.append(
                        (node.lineno, "imports keras.backend.backend (asks which backend runs)")
                    )
        elif isinstance(node, ast.Attribute):
            if _dotted(node) == "keras.backend.backend":
                found.append((node.lineno, "uses keras.backend.backend (asks which backend runs)"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if (
                name is not None
                and name.split(".")[-2:] == ["backend", "backend"]
                and name != "keras.backend.backend"
            ):
                found.append((node.lineno, f"calls {name}() (asks which backend runs)"))
            if name in ("importlib.import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    reason = _forbidden_module(first.value)
                    if reason:
                        found.append((node.lineno, reason))
    return sorted(set(found))


def _outside_the_seam():
    files = sorted(p for p in PACKAGE.rglob("*.py") if SEAM not in p.parents)
    assert files, f"no source found under {PACKAGE}"
    return files


@pytest.mark.backend_free
def test_no_backend_code_outside_keras_gradkit_backend():
    problems = []
    for path in _outside_the_seam():
        for line, reason in violations(path.read_text(encoding="utf-8"), str(path)):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {reason}")
    assert not problems, (
        "Backend code outside keras_gradkit/backend/ (move it to keras_gradkit/backend/<name>/ "
        "and reach it through keras_gradkit.backend.get):\n" + "\n".join(problems)
    )


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "source,reason",
    [
        ("import tensorflow as tf", "tensorflow"),
        ("import jax.numpy as jnp", "jax.numpy"),
        ("from torch import nn", "torch"),
        ("def f():\n    import tensorflow\n", "tensorflow"),
        ("from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell", "keras.src"),
        ("from keras import src", "keras.src"),
        ("import keras.src.backend", "keras.src"),
        ("import keras\nif keras.backend.backend() == 'jax':\n    pass\n", "keras.backend.backend"),
        ("import keras\nname = keras.backend.backend\n", "keras.backend.backend"),
        ("from keras.backend import backend", "keras.backend.backend"),
        ("from keras import backend\nbackend.backend()\n", "backend.backend()"),
        ("import importlib\nimportlib.import_module('torch')\n", "torch"),
    ],
)
def test_a_planted_violation_is_reported(source, reason):
    (found,) = {r for _, r in violations(source)} or {None}
    assert found is not None and reason in found, (source, found)


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "source",
    [
        "import keras\nfrom keras import ops\nx = keras.backend.floatx()\n",
        "from keras_gradkit import backend\nengine = backend.get('ind_recurrence')\n",
        "from keras_gradkit.backend.keras_private import DropoutRNNCell\n",
        "import tensorboard\nfrom tensorboard.compat.proto import event_pb2\n",
        "from . import ind_loops\n",
    ],
)
def test_backend_free_code_passes(source):
    assert violations(source) == []


@pytest.mark.backend_free
def test_each_backend_package_has_every_module():
    for name in FRAMEWORKS:
        missing = [m for m in BACKEND_MODULES if not (SEAM / name / f"{m}.py").is_file()]
        assert not missing, f"keras_gradkit/backend/{name}/ lacks {missing}"


@pytest.mark.parametrize("module", BACKEND_MODULES)
def test_the_running_backends_modules_import(module):
    # Each engine module imports on its own backend, through the seam.
    from keras_gradkit import backend

    loaded = backend.get(module)
    assert loaded.__name__ == f"keras_gradkit.backend.{BACKEND}.{module}"
    assert loaded is importlib.import_module(f"keras_gradkit.backend.{BACKEND}.{module}")
