"""What the guide "Recurrent layers for long sequences" relies on: each
backend says which mode of the linear recurrences `mode="auto"` runs, the
layers read it from there, every model of `examples/adding_problem.py`
builds, and GradientBoard's time probe measures each new layer."""

import ast
import importlib.util
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as pea
from tensorboard.util import tensor_util

import keras_gradkit as gk
from keras_gradkit import backend
from keras_gradkit.layers import LRU, MinGRU, MinLSTM
from keras_gradkit.layers.min_rnn import MODES
from tests.gradient_testing import value_and_gradients

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


def test_gradient_board_time_probe_measures_each_new_layer(tmp_path):
    # The probe's n_t = mean_i |d loss_i / d h_{i,t}| for each recurrent
    # layer's input sequence h, against the backend's own autograd of the
    # rest of the model (`gradient_testing`), with the weights held (SGD 0).
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 2)).astype("float32")
    y = rng.normal(size=(2, 1)).astype("float32")
    keras.utils.set_random_seed(7)
    # MUT1 is a `keras.layers.RNN`, probed as SimpleRNN and LSTM are
    # (tests/test_gradient_board.py); the others are layers of their own.
    layers = [
        MinGRU(3, return_sequences=True, name="min_gru"),  # mode="auto"
        MinLSTM(3, return_sequences=True, name="min_lstm"),
        LRU(2, name="lru"),
        keras.layers.Dense(1, name="head"),
    ]
    model = keras.Sequential([keras.Input((5, 2)), *layers])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    board = gk.callbacks.GradientBoard(tmp_path, time_probe=(x, y), write_plots=False)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[board])

    acc = pea.EventAccumulator(str(tmp_path / "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    recurrent = layers[:-1]
    hiddens = [x]  # each recurrent layer's input sequence
    for layer in recurrent[:-1]:
        output = layer(keras.ops.convert_to_tensor(hiddens[-1]), training=True)
        hiddens.append(keras.ops.convert_to_numpy(keras.ops.stop_gradient(output)))

    def summed_losses(*inputs):
        # Term i depends on the i-th input only: its gradient is term i's.
        total = 0.0
        for index, h in enumerate(inputs):
            for later in layers[index:]:
                h = later(h, training=True)
            error = keras.ops.subtract(h, keras.ops.convert_to_tensor(y))
            total = total + keras.ops.sum(keras.ops.mean(keras.ops.square(error), axis=-1))
        return total

    _, grads, _ = value_and_gradients(summed_losses, hiddens)
    for layer, grad in zip(recurrent, grads):
        expected = np.linalg.norm(grad, axis=-1).mean(axis=0)
        (event,) = acc.Tensors(f"time_gradient/{layer.name}/norms")
        found = tensor_util.make_ndarray(event.tensor_proto)
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-9, err_msg=layer.name)
        assert np.all(np.isfinite(found)) and found[-1] > 0.0, layer.name
