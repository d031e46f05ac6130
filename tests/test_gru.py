import importlib
import inspect
import math

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit._gradients import value_and_gradients
from keras_gradkit.layers import GRU
from keras_gradkit.layers import GRUCell
from tests.layer_testing import assert_config_round_trip
from tests.layer_testing import assert_keras_file_round_trip
from tests.layer_testing import run_layer_test
from tests.test_lstm import _documented_args
from tests.test_lstm import _inputs
from tests.test_lstm import _np
from tests.test_lstm import _randomize

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
        np.testing.assert_allclose(_np(layer(x)), numpy_gru(x.astype("float64"), kernel, recurrent, bias, reset_after),
                                   atol=1e-5)

    def test_gate_arguments_set_the_bias(self, reset_after):
        layer = GRU(U, reset_after=reset_after, update_bias=2.0, reset_bias=-1.0, candidate_bias=0.5)
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
            return lambda inputs: keras.ops.sum(keras.ops.multiply(keras.ops.square(layer(inputs)), weights))

        value_ours, (gx_ours,), gw_ours = value_and_gradients(loss(ours), [x], ours.trainable_weights)
        value_theirs, (gx_theirs,), gw_theirs = value_and_gradients(loss(theirs), [x], theirs.trainable_weights)
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
        assert isinstance(layer, keras.layers.GRU)
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
        layer = GRU(U, update_bias=2.0, reset_bias=-1.0, candidate_bias=0.1, reset_after=False, use_cudnn=False)
        config = layer.get_config()
        assert set(inspect.signature(GRU.__init__).parameters) - {"self", "kwargs"} <= set(config)
        assert config["update_bias"] == 2.0 and config["reset_after"] is False and config["use_cudnn"] is False
        assert_config_round_trip(layer)
        cell = GRUCell(U, chrono_timesteps=12, seed=3)
        assert set(inspect.signature(GRUCell.__init__).parameters) - {"self", "kwargs"} <= set(cell.get_config())
        assert_config_round_trip(cell)

    def test_cell_keras_file_round_trip(self, tmp_path):
        inputs = keras.Input((T, D))
        model = keras.Model(inputs, keras.layers.RNN(GRUCell(U, reset_after=False, update_bias=1.0))(inputs))
        _randomize(model)
        loaded = assert_keras_file_round_trip(model, _inputs(), tmp_path)
        assert isinstance(loaded.layers[1].cell, GRUCell) and loaded.layers[1].cell.update_bias == 1.0

    @pytest.mark.parametrize("cls", [GRU, GRUCell])
    def test_documented_args_match_signature(self, cls):
        signature = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
        assert _documented_args(cls) == signature
        assert f"keras_gradkit.layers.{cls.__name__}" in cls.__doc__

    def test_public_paths(self):
        assert keras_gradkit.layers.GRU is GRU and keras_gradkit.layers.GRUCell is GRUCell
