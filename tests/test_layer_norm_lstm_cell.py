import inspect

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.layers import LayerNormLSTMCell
from tests.layer_testing import assert_config_round_trip, assert_keras_file_round_trip
from tests.test_lstm import _documented_args, _inputs, _np, load_saved_fixture

B, T, D, U = 3, 5, 4, 6


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _layer_norm(v, gamma, beta, epsilon):
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (v - mean) / np.sqrt(var + epsilon) + beta


def numpy_layer_norm_lstm(x, p, epsilon):
    """Ba et al.'s layer-normalized LSTM as tensorflow-addons computed it: LN on x W and
    h U (over all 4 * units), bias after, LN on the new cell state, which is carried."""
    units = p["recurrent_kernel"].shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        z = _layer_norm(x[:, t] @ p["kernel"], p["g_x"], p["b_x"], epsilon)
        z = z + _layer_norm(h @ p["recurrent_kernel"], p["g_h"], p["b_h"], epsilon) + p["bias"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _layer_norm(_sigmoid(f) * c + _sigmoid(i) * np.tanh(g), p["g_c"], p["b_c"], epsilon)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def _random_params(seed=0):
    rng = np.random.default_rng(seed)

    def n(*shape, loc=0.0):
        return rng.normal(loc=loc, scale=0.5, size=shape).astype("float32")

    return {
        "kernel": n(D, 4 * U),
        "recurrent_kernel": n(U, 4 * U),
        "bias": n(4 * U),
        "g_x": n(4 * U, loc=1.0),
        "b_x": n(4 * U),
        "g_h": n(4 * U, loc=1.0),
        "b_h": n(4 * U),
        "g_c": n(U, loc=1.0),
        "b_c": n(U),
    }


def _set_params(cell, p):
    cell.kernel.assign(p["kernel"])
    cell.recurrent_kernel.assign(p["recurrent_kernel"])
    cell.bias.assign(p["bias"])
    for norm, key in [(cell.kernel_norm, "x"), (cell.recurrent_norm, "h"), (cell.state_norm, "c")]:
        norm.gamma.assign(p["g_" + key])
        norm.beta.assign(p["b_" + key])


class TestLayerNormLSTMCell:
    @pytest.mark.parametrize("epsilon", [1e-3, 0.5])
    def test_equations_against_numpy(self, epsilon):
        x = _inputs()
        rnn = keras.layers.RNN(
            LayerNormLSTMCell(U, norm_epsilon=epsilon), return_sequences=True, return_state=True
        )
        rnn(x)
        p = _random_params()
        _set_params(rnn.cell, p)
        seq, h, c = (_np(t) for t in rnn(x))
        e_seq, e_h, e_c = numpy_layer_norm_lstm(x.astype("float64"), p, epsilon)
        np.testing.assert_allclose(seq, e_seq, atol=1e-5)
        np.testing.assert_allclose(h, e_h, atol=1e-5)
        np.testing.assert_allclose(c, e_c, atol=1e-5)

    def test_gate_arguments_set_the_bias(self):
        cell = LayerNormLSTMCell(
            U, input_bias=-1.0, forget_bias=2.0, cell_bias=0.5, output_bias=0.25
        )
        keras.layers.RNN(cell)(_inputs())
        np.testing.assert_array_equal(cell.bias.numpy(), np.repeat([-1.0, 2.0, 0.5, 0.25], U))
        chrono = LayerNormLSTMCell(U, chrono_timesteps=30, seed=2)
        keras.layers.RNN(chrono)(_inputs())
        b_i, b_f, _, _ = np.split(chrono.bias.numpy(), 4)
        np.testing.assert_array_equal(b_i, -b_f)
        assert b_f.min() >= 0 and b_f.std() > 0.1

    def test_weights_and_default_norm_initialization(self):
        cell = LayerNormLSTMCell(U)
        keras.layers.RNN(cell)(_inputs())
        assert len(cell.trainable_weights) == 9
        np.testing.assert_array_equal(cell.kernel_norm.gamma.numpy(), np.ones(4 * U))
        np.testing.assert_array_equal(cell.state_norm.beta.numpy(), np.zeros(U))
        assert cell.kernel_norm.epsilon == 1e-3

    def test_dropout_only_in_training(self):
        x = _inputs()
        rnn = keras.layers.RNN(LayerNormLSTMCell(U, dropout=0.5, recurrent_dropout=0.5, seed=1))
        inference = keras.ops.convert_to_numpy(rnn(x))
        np.testing.assert_array_equal(inference, keras.ops.convert_to_numpy(rnn(x, training=False)))
        trained = keras.ops.convert_to_numpy(rnn(x, training=True))
        assert np.all(np.isfinite(trained)) and not np.allclose(trained, inference)

    def test_fit_and_mixed_precision(self):
        x = _inputs()
        model = keras.Sequential(
            [keras.Input((T, D)), keras.layers.RNN(LayerNormLSTMCell(U)), keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, np.ones((B, 1)), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        keras.config.set_dtype_policy("mixed_float16")
        rnn = keras.layers.RNN(LayerNormLSTMCell(U), return_sequences=True)
        out = rnn(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in rnn.weights)

    def test_config_and_keras_file_round_trip(self, tmp_path):
        cell = LayerNormLSTMCell(
            U, norm_epsilon=1e-2, norm_gamma_initializer="glorot_uniform", forget_bias=2.0
        )
        config = cell.get_config()
        assert set(inspect.signature(LayerNormLSTMCell.__init__).parameters) - {
            "self",
            "kwargs",
        } <= set(config)
        assert config["norm_epsilon"] == 1e-2 and config["forget_bias"] == 2.0
        assert_config_round_trip(cell)
        inputs = keras.Input((T, D))
        model = keras.Model(inputs, keras.layers.RNN(cell, return_sequences=True)(inputs))
        _set_params(cell, _random_params(1))
        loaded = assert_keras_file_round_trip(model, _inputs(), tmp_path)
        assert isinstance(loaded.layers[1].cell, LayerNormLSTMCell)

    def test_keras_file_saved_with_the_cell_swap_loads(self, tmp_path):
        model = load_saved_fixture("layer_norm_lstm_cell_v1", tmp_path)
        cell, chrono = model.get_layer("cell").cell, model.get_layer("chrono").cell
        assert isinstance(cell, LayerNormLSTMCell) and cell.norm_epsilon == 1e-2
        np.testing.assert_array_equal(cell.bias.numpy(), np.repeat([0.0, 2.0, 0.0, -0.5], U))
        assert chrono.chrono_timesteps == 12 and chrono.seed == 4

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"norm_epsilon": 0.0}, "norm_epsilon"),
            ({"norm_epsilon": -1e-3}, "norm_epsilon"),
            ({"forget_bias": 2.0, "unit_forget_bias": True}, "unit_forget_bias"),
            ({"chrono_timesteps": 1}, "chrono_timesteps"),
            ({"units": 0}, "units"),
        ],
    )
    def test_invalid_arguments_raise(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            LayerNormLSTMCell(**{"units": 4, **kwargs})

    def test_documented_args_match_signature(self):
        signature = [
            p
            for p in inspect.signature(LayerNormLSTMCell.__init__).parameters
            if p not in ("self", "kwargs")
        ]
        assert _documented_args(LayerNormLSTMCell) == signature
        assert keras_gradkit.layers.LayerNormLSTMCell is LayerNormLSTMCell
