import importlib
import inspect
import math

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.layers import GRU, GRUCell
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    run_layer_test,
)
from tests.test_lstm import _documented_args, _inputs, _np, _randomize, load_saved_fixture

B, T, D, U = 3, 5, 4, 6


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_gru(x, kernel, recurrent_kernel, bias, reset_after):
    """Cho et al.'s GRU in Keras's convention h = z h_prev + (1 - z) candidate, gates z, r, h."""
    units = recurrent_kernel.shape[0]
    W = np.split(kernel, 3, axis=1)
    R = np.split(recurrent_kernel, 3, axis=1)
    if reset_after:
        b_in, b_rec = np.split(bias[0], 3), np.split(bias[1], 3)
    else:
        b_in, b_rec = np.split(bias, 3), [0.0, 0.0, 0.0]
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = _sigmoid(xt @ W[0] + b_in[0] + h @ R[0] + b_rec[0])
        r = _sigmoid(xt @ W[1] + b_in[1] + h @ R[1] + b_rec[1])
        if reset_after:
            candidate = np.tanh(xt @ W[2] + b_in[2] + r * (h @ R[2] + b_rec[2]))
        else:
            candidate = np.tanh(xt @ W[2] + b_in[2] + (r * h) @ R[2])
        h = z * h + (1 - z) * candidate
        outputs.append(h)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("reset_after", [True, False])
class TestGRU:
    def test_equation_against_numpy(self, reset_after):
        x = _inputs()
        layer = GRU(U, return_sequences=True, reset_after=reset_after)
        layer(x)
        _randomize(layer, seed=3)  # random bias rows too
        kernel, recurrent, bias = layer.get_weights()
        np.testing.assert_allclose(
            _np(layer(x)),
            numpy_gru(x.astype("float64"), kernel, recurrent, bias, reset_after),
            atol=1e-5,
        )

    def test_gate_arguments_set_the_bias(self, reset_after):
        layer = GRU(
            U, reset_after=reset_after, update_bias=2.0, reset_bias=-1.0, candidate_bias=0.5
        )
        layer(_inputs())
        row = np.concatenate([np.full(U, 2.0), np.full(U, -1.0), np.full(U, 0.5)])
        expected = np.stack([row, np.zeros(3 * U)]) if reset_after else row
        np.testing.assert_array_equal(layer.cell.bias.numpy(), expected)

    def test_equals_keras_gru_with_same_weights(self, reset_after):
        x = _inputs()
        kwargs = {"reset_after": reset_after, "return_sequences": True}
        ours, theirs = GRU(U, update_bias=1.0, **kwargs), keras.layers.GRU(U, **kwargs)
        ours(x), theirs(x)
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_array_equal(_np(ours(x)), _np(theirs(x)))
        weights = np.arange(U, dtype="float32")

        def loss(layer):
            return lambda inputs: keras.ops.sum(
                keras.ops.multiply(keras.ops.square(layer(inputs)), weights)
            )

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

    def test_masked_backwards_stateful_equals_keras(self, reset_after):
        x = _inputs()
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
        kwargs = {"reset_after": reset_after, "go_backwards": True, "return_state": True}
        ours, theirs = GRU(U, **kwargs), keras.layers.GRU(U, **kwargs)
        ours(x), theirs(x)
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        for a, b in zip(ours(x, mask=mask), theirs(x, mask=mask)):
            np.testing.assert_array_equal(_np(a), _np(b))

    def test_cell_in_rnn_equals_layer(self, reset_after):
        x = _inputs()
        layer = GRU(U, reset_after=reset_after, chrono_timesteps=20, seed=5)
        rnn = keras.layers.RNN(GRUCell(U, reset_after=reset_after, chrono_timesteps=20, seed=5))
        layer(x), rnn(x)
        np.testing.assert_array_equal(rnn.cell.bias.numpy(), layer.cell.bias.numpy())
        _randomize(layer)
        rnn.set_weights(layer.get_weights())
        np.testing.assert_allclose(_np(rnn(x)), _np(layer(x)), atol=1e-6)

    def test_cell_is_keras_and_keras_build_makes_the_weights(self, reset_after, monkeypatch):
        """The layer's cell is Keras's, and Keras's `GRUCell.build` creates its
        weights, named and shaped as keras.layers.GRU's; with the same weights,
        the same outputs."""
        built = []
        keras_build = keras.layers.GRUCell.build

        def recording_build(cell, input_shape):
            built.append(cell)
            keras_build(cell, input_shape)

        monkeypatch.setattr(keras.layers.GRUCell, "build", recording_build)
        x = _inputs()
        ours = GRU(U, reset_after=reset_after, update_bias=1.5, name="rnn")
        theirs = keras.layers.GRU(U, reset_after=reset_after, name="rnn")
        assert type(ours.cell) is keras.layers.GRUCell and ours.cell.name == "gru_cell"
        ours(x), theirs(x)
        assert built == [ours.cell, theirs.cell]
        assert [w.path for w in ours.weights] == [w.path for w in ours.cell.weights]
        described = [(w.path, tuple(w.shape)) for w in ours.trainable_weights]
        assert described == [(w.path, tuple(w.shape)) for w in theirs.trainable_weights]
        bias_shape = (2, 3 * U) if reset_after else (3 * U,)
        assert described == [
            ("rnn/gru_cell/kernel", (D, 3 * U)),
            ("rnn/gru_cell/recurrent_kernel", (U, 3 * U)),
            ("rnn/gru_cell/bias", bias_shape),
        ]
        _randomize(ours)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_array_equal(_np(ours(x)), _np(theirs(x)))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"update_bias": 2.0, "reset_bias": -1.0},
            {"chrono_timesteps": 12, "seed": 3},
            {"bias_initializer": "ones"},
        ],
    )
    def test_from_config_gives_the_same_bias(self, reset_after, kwargs):
        x = _inputs()
        layer = GRU(U, reset_after=reset_after, **kwargs)
        config = layer.get_config()
        assert config["bias_initializer"] is None or "bias_initializer" in kwargs
        restored = GRU.from_config(config)
        layer(x), restored(x)
        np.testing.assert_array_equal(restored.cell.bias.numpy(), layer.cell.bias.numpy())
        cell = GRUCell(U, reset_after=reset_after, **kwargs)
        restored_cell = GRUCell.from_config(cell.get_config())
        cell.build((None, D)), restored_cell.build((None, D))
        np.testing.assert_array_equal(restored_cell.bias.numpy(), cell.bias.numpy())
        np.testing.assert_array_equal(cell.bias.numpy(), layer.cell.bias.numpy())

    def test_seeded_weights_are_keras_weights(self, reset_after):
        """After `keras.utils.set_random_seed`, the layer and the layers built
        after it start from the weights they have with keras.layers.GRU."""

        def weights(cls):
            keras.utils.set_random_seed(7)
            layers = [cls(U, reset_after=reset_after, return_sequences=True) for _ in range(2)]
            return keras.Sequential(
                [keras.Input((T, D)), *layers, keras.layers.Dense(2)]
            ).get_weights()

        ours, theirs = weights(GRU), weights(keras.layers.GRU)
        assert len(ours) == len(theirs) == 8
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)

    def test_chrono(self, reset_after):
        layer = GRU(20, reset_after=reset_after, chrono_timesteps=50, seed=1)
        layer(_inputs())
        bias = layer.cell.bias.numpy()
        if reset_after:
            np.testing.assert_array_equal(bias[1], 0)
            bias = bias[0]
        b_z, b_r, b_h = np.split(bias, 3)
        assert b_z.min() >= 0 and b_z.max() <= math.log(49) + 1e-6 and b_z.std() > 0.3
        np.testing.assert_array_equal(np.concatenate([b_r, b_h]), 0)

    def test_layer_checks(self, reset_after, tmp_path):
        run_layer_test(
            GRU,
            {"units": U, "reset_after": reset_after, "update_bias": 1.0, "candidate_bias": -0.5},
            _inputs(),
            expected_output_shape=(B, U),
            expected_num_trainable_weights=3,
            tmp_path=tmp_path,
        )


class TestGRUArguments:
    def test_default_bias_is_keras_default(self):
        ours, theirs = GRU(U), keras.layers.GRU(U)
        ours(_inputs()), theirs(_inputs())
        np.testing.assert_array_equal(ours.cell.bias.numpy(), theirs.cell.bias.numpy())

    def test_bias_initializer_gives_keras_bias(self):
        ours, theirs = GRU(U, bias_initializer="ones"), keras.layers.GRU(U, bias_initializer="ones")
        ours(_inputs()), theirs(_inputs())
        np.testing.assert_array_equal(ours.cell.bias.numpy(), theirs.cell.bias.numpy())

    def test_keras_constructor_gets_the_computed_bias_initializer(self):
        layer = GRU(U, update_bias=2.0, reset_after=False)
        assert isinstance(layer.bias_initializer, keras_gradkit.initializers.GateBias)
        assert layer.bias_initializer.get_config() == {
            "layout": "gru",
            "reset_after": False,
            "update": 2.0,
            "reset": 0.0,
            "candidate": 0.0,
        }
        chrono = GRUCell(U, chrono_timesteps=20, seed=4)
        assert isinstance(chrono.bias_initializer, keras_gradkit.initializers.Chrono)
        assert chrono.bias_initializer.seed == 4 and chrono.bias_initializer.reset_after is True
        assert isinstance(GRU(U, bias_initializer="ones").bias_initializer, keras.initializers.Ones)
        # The config has the arguments, not the computed initializer.
        cell = GRUCell(U, update_bias=2.0, reset_after=False)
        for config in (layer.get_config(), cell.get_config(), chrono.get_config()):
            assert config["bias_initializer"] is None
        assert (
            layer.get_config()["update_bias"] == 2.0
            and chrono.get_config()["chrono_timesteps"] == 20
        )

    def test_is_a_keras_gru_and_reaches_the_fused_kernel(self, monkeypatch):
        """On every backend the layer hands its own variables to Keras's fused
        `backend.gru` (cuDNN on TensorFlow and PyTorch GPUs), as keras.layers.GRU does."""
        calls = []

        def fake_fused(inputs, h, mask, kernel, recurrent_kernel, bias, **kwargs):
            calls.append((kernel, recurrent_kernel, bias, kwargs["reset_after"]))
            raise NotImplementedError  # Keras then falls back to the generic loop

        monkeypatch.setattr(importlib.import_module("keras.src.backend"), "gru", fake_fused)
        layer = GRU(U, update_bias=2.0)
        assert isinstance(layer, keras.layers.GRU) and isinstance(layer.cell, keras.layers.GRUCell)
        layer(_inputs())
        assert len(calls) == 1
        kernel, recurrent_kernel, bias, reset_after = calls[0]
        assert kernel is layer.cell.kernel and recurrent_kernel is layer.cell.recurrent_kernel
        assert bias is layer.cell.bias and reset_after is True
        np.testing.assert_array_equal(layer.cell.bias.numpy()[0], np.repeat([2.0, 0.0, 0.0], U))
        calls.clear()
        GRU(U, use_cudnn=False)(_inputs())
        assert calls == []

    @pytest.mark.tensorflow_only  # Keras's TensorFlow cuDNN entry points and XLA flag
    def test_reaches_the_cudnn_kernel(self, monkeypatch):
        tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
        calls = []

        def fake_cudnn(inputs, h, kernel, recurrent_kernel, bias, *args):
            calls.append(bias)
            raise NotImplementedError

        monkeypatch.setattr(tf_rnn, "_is_gpu_available", lambda: True)
        monkeypatch.setattr(tf_rnn, "_cudnn_gru", fake_cudnn)
        layer = GRU(U, update_bias=2.0)
        assert isinstance(layer, keras.layers.GRU) and type(layer.cell) is keras.layers.GRUCell
        assert layer.supports_jit is False  # decided in the constructor, as keras.layers.GRU does
        for kwargs in [{"use_cudnn": True}, {"unroll": True}, {"reset_after": False}]:
            expected = keras.layers.GRU(U, **kwargs).supports_jit
            assert GRU(U, update_bias=2.0, **kwargs).supports_jit is expected
        assert (
            GRU(U, reset_after=False).supports_jit is True
            and GRU(U, use_cudnn=False).supports_jit is True
        )
        layer(_inputs())
        assert len(calls) == 1 and layer.supports_jit is False
        np.testing.assert_array_equal(calls[0].numpy(), layer.cell.bias.numpy())
        GRU(U, reset_after=False)(_inputs())  # cuDNN needs reset_after=True
        assert len(calls) == 1

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"update_bias": 2.0, "bias_initializer": "zeros"}, "bias_initializer"),
            ({"chrono_timesteps": 10, "bias_initializer": "ones"}, "bias_initializer"),
            ({"chrono_timesteps": 10, "reset_bias": 1.0}, "chrono_timesteps"),
            ({"chrono_timesteps": 0}, "chrono_timesteps"),
            ({"units": -1}, "units"),
            ({"dropout": 2.0}, "dropout"),
            ({"candidate_bias": float("nan")}, "candidate_bias"),
        ],
    )
    def test_invalid_arguments_raise(self, kwargs, name):
        kwargs = {"units": 4, **kwargs}
        with pytest.raises(ValueError, match=name):
            GRU(**kwargs)
        with pytest.raises(ValueError, match=name):
            GRUCell(**kwargs)

    def test_type_errors(self):
        with pytest.raises(TypeError, match="update_bias"):
            GRU(4, update_bias=None)
        with pytest.raises(TypeError, match="reset_after"):
            GRU(4, reset_after="yes")
        with pytest.raises(ValueError, match="use_cudnn"):
            GRU(4, use_cudnn="maybe")

    def test_config_is_complete(self):
        layer = GRU(
            U,
            update_bias=2.0,
            reset_bias=-1.0,
            candidate_bias=0.1,
            reset_after=False,
            use_cudnn=False,
        )
        config = layer.get_config()
        assert set(inspect.signature(GRU.__init__).parameters) - {"self", "kwargs"} <= set(config)
        assert (
            config["update_bias"] == 2.0
            and config["reset_after"] is False
            and config["use_cudnn"] is False
        )
        assert_config_round_trip(layer)
        cell = GRUCell(U, chrono_timesteps=12, seed=3)
        assert set(inspect.signature(GRUCell.__init__).parameters) - {"self", "kwargs"} <= set(
            cell.get_config()
        )
        assert_config_round_trip(cell)

    def test_cell_keras_file_round_trip(self, tmp_path):
        inputs = keras.Input((T, D))
        model = keras.Model(
            inputs, keras.layers.RNN(GRUCell(U, reset_after=False, update_bias=1.0))(inputs)
        )
        _randomize(model)
        loaded = assert_keras_file_round_trip(model, _inputs(), tmp_path)
        assert (
            isinstance(loaded.layers[1].cell, GRUCell) and loaded.layers[1].cell.update_bias == 1.0
        )

    def test_keras_file_saved_with_the_cell_swap_loads(self, tmp_path):
        model = load_saved_fixture("gru_gate_bias_v1", tmp_path)
        gates, chrono = model.get_layer("gates"), model.get_layer("chrono")
        assert isinstance(gates, GRU) and (gates.update_bias, gates.reset_bias) == (2.0, -1.0)
        row = np.repeat([2.0, -1.0, 0.5], U)
        np.testing.assert_array_equal(gates.cell.bias.numpy(), np.stack([row, np.zeros(3 * U)]))
        assert chrono.chrono_timesteps == 12 and chrono.reset_after is False
        assert chrono.get_config()["seed"] == 3 and chrono.get_config()["use_cudnn"] is False
        cell = model.get_layer("cell").cell
        assert isinstance(cell, GRUCell) and cell.update_bias == 1.0 and cell.reset_after is False

    @pytest.mark.parametrize("cls", [GRU, GRUCell])
    def test_documented_args_match_signature(self, cls):
        signature = [
            p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")
        ]
        assert _documented_args(cls) == signature
        assert f"keras_gradkit.layers.{cls.__name__}" in cls.__doc__

    def test_public_paths(self):
        assert keras_gradkit.layers.GRU is GRU and keras_gradkit.layers.GRUCell is GRUCell
