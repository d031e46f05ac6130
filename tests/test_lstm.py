import importlib
import inspect
import math
import pathlib
import re

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.layers import GRU, LSTM, GRUCell, LayerNormLSTMCell, LSTMCell
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

B, T, D, U = 3, 5, 4, 6
DATA = pathlib.Path(__file__).parent / "data"


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_lstm(x, kernel, recurrent_kernel, bias):
    """Hochreiter & Schmidhuber's LSTM with forget gate, gates in order i, f, c, o."""
    units = recurrent_kernel.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i = _sigmoid(z[:, :units])
        f = _sigmoid(z[:, units : 2 * units])
        g = np.tanh(z[:, 2 * units : 3 * units])
        o = _sigmoid(z[:, 3 * units :])
        c = f * c + i * g
        h = o * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _inputs(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype("float32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()]
    )


def load_saved_fixture(name, tmp_path):
    """Loads `tests/data/<name>.keras`, a model saved by keras_gradkit 86cb3c2
    (whose LSTM and GRU swapped Keras's cell for their own), and checks that it
    has the saved weights and gives the saved outputs, also once saved again.

    The `.npz` next to it holds `inputs`, `outputs` and `weight_<i>` in the
    order of `model.weights`; the kernels are random and the biases are the
    ones the gate arguments made.
    """
    model = keras.saving.load_model(DATA / f"{name}.keras")
    saved = np.load(DATA / f"{name}.npz")
    assert len(model.weights) == len([k for k in saved.files if k.startswith("weight_")])
    for i, weight in enumerate(model.weights):
        np.testing.assert_array_equal(_np(weight), saved[f"weight_{i}"], err_msg=weight.path)
    np.testing.assert_allclose(_np(model(saved["inputs"])), saved["outputs"], atol=1e-5)
    assert_keras_file_round_trip(model, saved["inputs"], tmp_path)
    return model


def _documented_args(cls):
    doc = inspect.getdoc(cls)
    section = doc.split("Args:")[1].split("Call arguments:")[0]
    return re.findall(r"^    (\w+):", section, flags=re.M)


class TestLSTM:
    def test_equation_and_gate_order_against_numpy(self):
        x = _inputs()
        layer = LSTM(
            U,
            return_sequences=True,
            return_state=True,
            forget_bias=2.0,
            input_bias=-1.0,
            cell_bias=0.5,
            output_bias=0.25,
        )
        layer(x)
        rng = np.random.default_rng(2)
        kernel = rng.normal(scale=0.5, size=(D, 4 * U)).astype("float32")
        recurrent = rng.normal(scale=0.5, size=(U, 4 * U)).astype("float32")
        layer.cell.kernel.assign(kernel)
        layer.cell.recurrent_kernel.assign(recurrent)
        # The bias the arguments ask for, written out independently of the layer.
        bias = np.concatenate(
            [np.full(U, -1.0), np.full(U, 2.0), np.full(U, 0.5), np.full(U, 0.25)]
        )
        seq, h, c = (_np(t) for t in layer(x))
        e_seq, e_h, e_c = numpy_lstm(x.astype("float64"), kernel, recurrent, bias)
        np.testing.assert_allclose(seq, e_seq, atol=1e-5)
        np.testing.assert_allclose(h, e_h, atol=1e-5)
        np.testing.assert_allclose(c, e_c, atol=1e-5)

    def test_default_bias_is_keras_default(self):
        ours, theirs = LSTM(U), keras.layers.LSTM(U)
        ours(_inputs()), theirs(_inputs())
        np.testing.assert_array_equal(ours.cell.bias.numpy(), theirs.cell.bias.numpy())
        np.testing.assert_array_equal(ours.cell.bias.numpy(), np.repeat([0.0, 1.0, 0.0, 0.0], U))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"unit_forget_bias": False},
            {"unit_forget_bias": True, "bias_initializer": "ones"},
            {"bias_initializer": "ones"},
            {"unit_forget_bias": False, "bias_initializer": "ones"},
        ],
    )
    def test_keras_bias_arguments_give_keras_bias(self, kwargs):
        ours, theirs = LSTM(U, **kwargs), keras.layers.LSTM(U, **kwargs)
        ours(_inputs()), theirs(_inputs())
        np.testing.assert_array_equal(ours.cell.bias.numpy(), theirs.cell.bias.numpy())

    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"return_sequences": True, "go_backwards": True},
            {"return_state": True, "dropout": 0.0, "activation": "relu"},
            {"use_bias": False, "return_sequences": True},
        ],
    )
    def test_equals_keras_lstm_with_same_weights(self, kwargs):
        x = _inputs()
        ours, theirs = LSTM(U, **kwargs), keras.layers.LSTM(U, **kwargs)
        ours(x), theirs(x)
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        for a, b in zip(keras.tree.flatten(ours(x)), keras.tree.flatten(theirs(x))):
            np.testing.assert_array_equal(_np(a), _np(b))

        def loss(layer):
            def fn(inputs):
                out = layer(inputs)
                return keras.ops.sum(
                    keras.ops.square(
                        keras.ops.concatenate(out, axis=-1) if kwargs.get("return_state") else out
                    )
                )

            return fn

        value_ours, (gx_ours,), gw_ours = value_and_gradients(
            loss(ours), [x], ours.trainable_weights
        )
        value_theirs, (gx_theirs,), gw_theirs = value_and_gradients(
            loss(theirs), [x], theirs.trainable_weights
        )
        np.testing.assert_allclose(value_ours, value_theirs, rtol=1e-6)
        assert len(gw_ours) == len(gw_theirs) == len(ours.trainable_weights)
        for a, b in zip([gx_ours] + gw_ours, [gx_theirs] + gw_theirs):
            assert np.any(a != 0)
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)

    def test_masked_equals_keras(self):
        x = _inputs()
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
        ours, theirs = LSTM(U, return_sequences=True), keras.layers.LSTM(U, return_sequences=True)
        ours(x), theirs(x)
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_array_equal(_np(ours(x, mask=mask)), _np(theirs(x, mask=mask)))

    def test_cell_in_rnn_equals_layer(self):
        x = _inputs()
        layer = LSTM(U, return_sequences=True, forget_bias=3.0)
        rnn = keras.layers.RNN(LSTMCell(U, forget_bias=3.0), return_sequences=True)
        layer(x), rnn(x)
        np.testing.assert_array_equal(rnn.cell.bias.numpy(), layer.cell.bias.numpy())
        _randomize(layer)
        rnn.set_weights(layer.get_weights())
        np.testing.assert_allclose(_np(rnn(x)), _np(layer(x)), atol=1e-6)

    def test_is_a_keras_lstm_and_reaches_the_fused_kernel(self, monkeypatch):
        """On every backend the layer hands its own variables to Keras's fused
        `backend.lstm` (cuDNN on TensorFlow and PyTorch GPUs), as keras.layers.LSTM does."""
        calls = []

        def fake_fused(inputs, h, c, mask, kernel, recurrent_kernel, bias, **kwargs):
            calls.append((kernel, recurrent_kernel, bias))
            raise NotImplementedError  # Keras then falls back to the generic loop

        monkeypatch.setattr(importlib.import_module("keras.src.backend"), "lstm", fake_fused)
        layer = LSTM(U, forget_bias=2.0)
        assert isinstance(layer, keras.layers.LSTM) and isinstance(
            layer.cell, keras.layers.LSTMCell
        )
        layer(_inputs())
        assert len(calls) == 1
        assert calls[0][0] is layer.cell.kernel and calls[0][1] is layer.cell.recurrent_kernel
        assert calls[0][2] is layer.cell.bias
        np.testing.assert_array_equal(layer.cell.bias.numpy(), np.repeat([0.0, 2.0, 0.0, 0.0], U))
        calls.clear()
        LSTM(U, use_cudnn=False)(_inputs())
        assert calls == []

    @pytest.mark.tensorflow_only  # Keras's TensorFlow cuDNN entry points and XLA flag
    def test_is_a_keras_lstm_and_reaches_the_cudnn_kernel(self, monkeypatch):
        """With a GPU reported, the layer hands its own variables to Keras's cuDNN LSTM."""
        tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

        calls = []

        def fake_cudnn(inputs, h, c, kernel, recurrent_kernel, bias, *args):
            calls.append((kernel, recurrent_kernel, bias))
            raise NotImplementedError  # Keras then falls back to the generic loop

        monkeypatch.setattr(tf_rnn, "_is_gpu_available", lambda: True)
        monkeypatch.setattr(tf_rnn, "_cudnn_lstm", fake_cudnn)
        layer = LSTM(U, forget_bias=2.0)
        assert isinstance(layer, keras.layers.LSTM)
        assert type(layer.cell) is keras.layers.LSTMCell
        assert layer.supports_jit is False  # decided in the constructor, as keras.layers.LSTM does
        for kwargs in [{"use_cudnn": True}, {"unroll": True}, {"use_cudnn": False}]:
            expected = keras.layers.LSTM(U, **kwargs).supports_jit
            assert LSTM(U, forget_bias=2.0, **kwargs).supports_jit is expected
        assert (
            LSTM(U, use_cudnn=False).supports_jit is True
            and LSTM(U, unroll=True).supports_jit is True
        )
        layer(_inputs())
        assert len(calls) == 1
        np.testing.assert_array_equal(calls[0][2].numpy(), layer.cell.bias.numpy())
        assert layer.supports_jit is False
        calls.clear()
        LSTM(U, use_cudnn=False)(_inputs())
        assert calls == []

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"forget_bias": 2.0},
            {"chrono_timesteps": 9, "seed": 1},
            {"unit_forget_bias": False},
            {"use_bias": False},
        ],
    )
    def test_cell_is_keras_and_keras_build_makes_the_weights(self, monkeypatch, kwargs):
        """The layer's cell is Keras's, and Keras's `LSTMCell.build` creates its
        weights, named and shaped as keras.layers.LSTM's; with the same
        weights, the same outputs."""
        built = []
        keras_build = keras.layers.LSTMCell.build

        def recording_build(cell, input_shape):
            built.append(cell)
            keras_build(cell, input_shape)

        monkeypatch.setattr(keras.layers.LSTMCell, "build", recording_build)
        x = _inputs()
        keras_kwargs = {
            k: v for k, v in kwargs.items() if k in ("unit_forget_bias", "use_bias", "seed")
        }
        ours, theirs = (
            LSTM(U, name="rnn", **kwargs),
            keras.layers.LSTM(U, name="rnn", **keras_kwargs),
        )
        assert type(ours.cell) is keras.layers.LSTMCell and ours.cell.name == "lstm_cell"
        ours(x), theirs(x)
        assert built == [ours.cell, theirs.cell]
        assert [w.path for w in ours.weights] == [w.path for w in ours.cell.weights]
        described = [(w.path, tuple(w.shape)) for w in ours.trainable_weights]
        assert described == [(w.path, tuple(w.shape)) for w in theirs.trainable_weights]
        expected = [
            ("rnn/lstm_cell/kernel", (D, 4 * U)),
            ("rnn/lstm_cell/recurrent_kernel", (U, 4 * U)),
        ]
        assert described == expected + (
            [("rnn/lstm_cell/bias", (4 * U,))] if kwargs.get("use_bias", True) else []
        )
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_array_equal(_np(ours(x)), _np(theirs(x)))

    def test_keras_constructor_gets_the_computed_bias_initializer(self):
        layer = LSTM(U, forget_bias=2.0)
        assert isinstance(layer.bias_initializer, keras_gradkit.initializers.GateBias)
        assert (
            layer.bias_initializer.get_config()["forget"] == 2.0 and layer.unit_forget_bias is False
        )
        chrono = LSTMCell(U, chrono_timesteps=20, seed=4)
        assert isinstance(chrono.bias_initializer, keras_gradkit.initializers.Chrono)
        assert chrono.bias_initializer.seed == 4 and chrono.unit_forget_bias is False
        keras_style = LSTM(U, bias_initializer="ones")
        assert isinstance(keras_style.bias_initializer, keras.initializers.Ones)
        assert keras_style.unit_forget_bias is True
        # The config has the arguments, not the computed initializer.
        for config in (layer.get_config(), LSTMCell(U, forget_bias=2.0).get_config()):
            assert config["bias_initializer"] is None and config["unit_forget_bias"] is None
            assert config["forget_bias"] == 2.0
        assert LSTM(U, unit_forget_bias=False).get_config()["bias_initializer"] is None

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"forget_bias": 2.0, "input_bias": -1.0},
            {"chrono_timesteps": 12, "seed": 3},
            {"unit_forget_bias": False},
            {"bias_initializer": "ones"},
            {"bias_initializer": "ones", "unit_forget_bias": False},
        ],
    )
    def test_from_config_gives_the_same_bias(self, kwargs):
        x = _inputs()
        layer = LSTM(U, **kwargs)
        restored = LSTM.from_config(layer.get_config())
        layer(x), restored(x)
        np.testing.assert_array_equal(restored.cell.bias.numpy(), layer.cell.bias.numpy())
        cell = LSTMCell(U, **kwargs)
        restored_cell = LSTMCell.from_config(cell.get_config())
        cell.build((None, D)), restored_cell.build((None, D))
        np.testing.assert_array_equal(restored_cell.bias.numpy(), cell.bias.numpy())
        np.testing.assert_array_equal(cell.bias.numpy(), layer.cell.bias.numpy())

    def test_seeded_weights_are_keras_weights(self):
        """After `keras.utils.set_random_seed`, the layer and the layers built
        after it start from the weights they have with keras.layers.LSTM: the
        layer draws the seeds Keras's draws, and no others."""

        def weights(make):
            keras.utils.set_random_seed(7)
            model = keras.Sequential([keras.Input((T, D)), make(), make(), keras.layers.Dense(2)])
            return model.get_weights()

        ours = weights(lambda: LSTM(U, return_sequences=True))
        theirs = weights(lambda: keras.layers.LSTM(U, return_sequences=True))
        assert len(ours) == len(theirs) == 8
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)

    @pytest.mark.skipif(
        keras.backend.backend() == "tensorflow", reason="the TensorFlow answer is tested with cuDNN"
    )
    def test_no_cudnn_check_off_tensorflow(self):
        assert (
            keras.layers.LSTM(U).supports_jit is True and keras.layers.GRU(U).supports_jit is True
        )
        assert LSTM(U).supports_jit is True and GRU(U).supports_jit is True
        assert LSTM(U, use_cudnn=True).supports_jit is True
        assert GRU(U, use_cudnn=True).supports_jit is True

    def test_chrono(self):
        layer = LSTM(20, chrono_timesteps=40, seed=3)
        layer(_inputs())
        b_i, b_f, b_c, b_o = np.split(layer.cell.bias.numpy(), 4)
        assert b_f.min() >= 0 and b_f.max() <= math.log(39) + 1e-6 and b_f.std() > 0.3
        np.testing.assert_array_equal(b_i, -b_f)
        np.testing.assert_array_equal(np.concatenate([b_c, b_o]), 0)
        again = LSTM(20, chrono_timesteps=40, seed=3)
        again(_inputs())
        np.testing.assert_array_equal(again.cell.bias.numpy(), layer.cell.bias.numpy())

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"forget_bias": 2.0, "unit_forget_bias": True}, "unit_forget_bias"),
            ({"forget_bias": 2.0, "unit_forget_bias": False}, "unit_forget_bias"),
            ({"input_bias": -1.0, "bias_initializer": "zeros"}, "bias_initializer"),
            ({"chrono_timesteps": 10, "unit_forget_bias": True}, "unit_forget_bias"),
            ({"chrono_timesteps": 10, "bias_initializer": "ones"}, "bias_initializer"),
            ({"chrono_timesteps": 10, "forget_bias": 3.0}, "chrono_timesteps"),
            ({"chrono_timesteps": 1}, "chrono_timesteps"),
            ({"units": 0}, "units"),
            ({"dropout": 1.5}, "dropout"),
            ({"recurrent_dropout": -0.1}, "recurrent_dropout"),
            ({"use_cudnn": "yes"}, "use_cudnn"),
            ({"output_bias": float("inf")}, "output_bias"),
        ],
    )
    def test_invalid_arguments_raise(self, kwargs, name):
        kwargs = {"units": 4, **kwargs}
        with pytest.raises(ValueError, match=name):
            LSTM(**kwargs)
        if "use_cudnn" not in kwargs:
            with pytest.raises(ValueError, match=name):
                LSTMCell(**kwargs)

    def test_non_number_gate_raises_type_error(self):
        with pytest.raises(
            TypeError, match="Argument `units` must be a positive integer. Received: units=2.5"
        ):
            LSTM(2.5)
        with pytest.raises(TypeError, match="forget_bias"):
            LSTM(4, forget_bias="1")
        with pytest.raises(TypeError, match="unit_forget_bias"):
            LSTM(4, unit_forget_bias="yes")

    def test_layer_checks(self, tmp_path):
        run_layer_test(
            LSTM,
            {"units": U, "forget_bias": 2.0, "output_bias": -0.5, "return_sequences": True},
            _inputs(),
            expected_output_shape=(B, T, U),
            expected_num_trainable_weights=3,
            tmp_path=tmp_path,
        )
        run_layer_test(
            LSTM,
            {"units": U, "chrono_timesteps": 8, "seed": 1},
            _inputs(),
            expected_output_shape=(B, U),
            run_training=False,
        )

    def test_config_is_complete(self):
        layer = LSTM(
            U, forget_bias=2.0, input_bias=-1.0, cell_bias=0.1, output_bias=0.2, use_cudnn=False
        )
        config = layer.get_config()
        signature = inspect.signature(LSTM.__init__).parameters
        assert set(signature) - {"self", "kwargs"} <= set(config)
        assert config["use_cudnn"] is False and config["forget_bias"] == 2.0
        assert_config_round_trip(LSTM(U, chrono_timesteps=30, seed=2))
        cell_config = LSTMCell(U, cell_bias=0.3).get_config()
        assert set(inspect.signature(LSTMCell.__init__).parameters) - {"self", "kwargs"} <= set(
            cell_config
        )
        assert_config_round_trip(LSTMCell(U, cell_bias=0.3))

    def test_cell_keras_file_round_trip(self, tmp_path):
        inputs = keras.Input((T, D))
        outputs = keras.layers.RNN(LSTMCell(U, output_bias=1.0, seed=2))(inputs)
        model = keras.Model(inputs, outputs)
        _randomize(model)
        loaded = assert_keras_file_round_trip(model, _inputs(), tmp_path)
        assert (
            isinstance(loaded.layers[1].cell, LSTMCell) and loaded.layers[1].cell.output_bias == 1.0
        )

    def test_keras_file_saved_with_the_cell_swap_loads(self, tmp_path):
        model = load_saved_fixture("lstm_gate_bias_v1", tmp_path)
        gates, chrono, keras_style = (
            model.get_layer(n) for n in ("gates", "chrono", "keras_style")
        )
        assert isinstance(gates, LSTM) and (gates.forget_bias, gates.input_bias) == (2.0, -1.0)
        np.testing.assert_array_equal(gates.cell.bias.numpy(), np.repeat([-1.0, 2.0, 0.5, 0.25], U))
        assert chrono.chrono_timesteps == 12 and chrono.get_config()["seed"] == 3
        config = keras_style.get_config()
        assert config["unit_forget_bias"] is False and config["use_cudnn"] is False
        assert config["bias_initializer"]["class_name"] == "Ones"
        cell = model.get_layer("cell").cell
        assert isinstance(cell, LSTMCell) and cell.output_bias == 1.0 and cell.seed == 2

    @pytest.mark.parametrize("cls", [LSTM, LSTMCell])
    def test_documented_args_match_signature(self, cls):
        signature = [
            p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")
        ]
        assert _documented_args(cls) == signature
        assert f"keras_gradkit.layers.{cls.__name__}" in cls.__doc__


@pytest.mark.tensorflow_only  # SavedModel export and TensorFlow serving
def test_export_serves_every_gated_layer_without_keras_gradkit(tmp_path):
    """One SavedModel with each layer and cell of this family, served in a fresh process."""
    inputs = keras.Input((T, D))
    branches = [
        LSTM(U, forget_bias=2.0, use_cudnn=False)(inputs),
        GRU(U, update_bias=1.0, use_cudnn=False)(inputs),
        GRU(U, reset_after=False, chrono_timesteps=10, use_cudnn=False)(inputs),
        keras.layers.RNN(LSTMCell(U, chrono_timesteps=10))(inputs),
        keras.layers.RNN(GRUCell(U, reset_bias=0.5))(inputs),
        keras.layers.RNN(LayerNormLSTMCell(U))(inputs),
    ]
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    _randomize(model, seed=4)
    assert_export_serves(model, _inputs(), tmp_path)


def test_public_paths():
    assert keras_gradkit.layers.LSTM is LSTM and keras_gradkit.layers.LSTMCell is LSTMCell


def _training_graph_ops(layer, x):
    """The op types of the traced forward-and-gradient graph of `layer`."""
    import tensorflow as tf

    layer(x)
    _randomize(layer)

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(inputs)))
        return tape.gradient(loss, layer.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    ops = sorted(op.type for op in graph.get_operations())
    for function in graph.as_graph_def().library.function:  # the while-loop bodies
        ops += sorted(node.op for node in function.node_def)
    return sorted(ops)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: LSTM(U, forget_bias=2.0), lambda: keras.layers.LSTM(U)),
        (lambda: GRU(U, update_bias=1.0), lambda: keras.layers.GRU(U)),
        (
            lambda: GRU(U, reset_after=False, chrono_timesteps=9),
            lambda: keras.layers.GRU(U, reset_after=False),
        ),
    ],
)
@pytest.mark.tensorflow_only  # compares traced tf.function graphs op for op
def test_training_graph_is_the_keras_graph(ours, theirs):
    """Same ops in the traced training step: the speed is Keras's by construction.
    On every backend, test_equals_keras_lstm_with_same_weights (and the GRU's)
    check the same outputs and gradients as Keras's layer."""
    x = _inputs()
    assert _training_graph_ops(ours(), x) == _training_graph_ops(theirs(), x)
