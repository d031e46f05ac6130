import json
import math

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.initializers import Chrono, GateBias


class TestGateBias:
    def test_lstm_order_is_i_f_c_o(self):
        got = keras.ops.convert_to_numpy(
            GateBias("lstm", input=-1.0, forget=2.0, cell=0.5, output=3.0)((4 * 3,))
        )
        expected = np.array([-1.0] * 3 + [2.0] * 3 + [0.5] * 3 + [3.0] * 3, dtype="float32")
        np.testing.assert_array_equal(got, expected)

    def test_unnamed_gates_are_zero(self):
        got = keras.ops.convert_to_numpy(GateBias("lstm", forget=1.0)((8,)))
        np.testing.assert_array_equal(got, [0, 0, 1, 1, 0, 0, 0, 0])

    def test_gru_reset_before_is_one_row_z_r_h(self):
        got = keras.ops.convert_to_numpy(
            GateBias("gru", reset_after=False, update=2.0, candidate=-1.0)((6,))
        )
        np.testing.assert_array_equal(got, [2, 2, 0, 0, -1, -1])

    def test_gru_reset_after_fills_input_row_only(self):
        got = keras.ops.convert_to_numpy(
            GateBias("gru", update=2.0, reset=0.5, candidate=-1.0)((2, 6))
        )
        np.testing.assert_array_equal(got[0], [2, 2, 0.5, 0.5, -1, -1])
        np.testing.assert_array_equal(got[1], np.zeros(6))

    def test_dtype(self):
        got = GateBias("lstm", forget=1.0)((4,), dtype="float16")
        assert keras.backend.standardize_dtype(got.dtype) == "float16"

    @pytest.mark.parametrize(
        "layout, gates, name",
        [
            ("lstm", {"forgett": 1.0}, "forgett"),
            ("lstm", {"update": 1.0}, "update"),
            ("gru", {"forget": 1.0}, "forget"),
        ],
    )
    @pytest.mark.backend_free
    def test_unknown_or_foreign_gate_names_raise(self, layout, gates, name):
        with pytest.raises(ValueError, match=name):
            GateBias(layout, **gates)

    @pytest.mark.backend_free
    def test_foreign_gate_message_names_its_layout(self):
        with pytest.raises(ValueError, match="layout='gru'"):
            GateBias("lstm", update=1.0)

    @pytest.mark.backend_free
    def test_invalid_arguments_raise(self):
        with pytest.raises(ValueError, match="layout"):
            GateBias("rnn")
        with pytest.raises(ValueError, match="reset_after"):
            GateBias("lstm", reset_after=False)
        with pytest.raises(TypeError, match="forget"):
            GateBias("lstm", forget="1")
        with pytest.raises(ValueError, match="forget"):
            GateBias("lstm", forget=float("nan"))

    @pytest.mark.parametrize(
        "init, shape",
        [
            (GateBias("lstm"), (6,)),
            (GateBias("lstm"), (2, 8)),
            (GateBias("gru"), (6,)),
            (GateBias("gru"), (3, 6)),
            (GateBias("gru", reset_after=False), (2, 6)),
        ],
    )
    @pytest.mark.backend_free
    def test_wrong_shape_raises_with_shape(self, init, shape):
        with pytest.raises(ValueError, match=r"shape=\(" + ", ".join(str(s) for s in shape)):
            init(shape)

    @pytest.mark.backend_free
    def test_config_round_trip(self):
        init = GateBias("gru", reset_after=False, update=1.5)
        config = init.get_config()
        assert config == {
            "layout": "gru",
            "reset_after": False,
            "update": 1.5,
            "reset": 0.0,
            "candidate": 0.0,
        }
        restored = keras.saving.deserialize_keras_object(
            json.loads(json.dumps(keras.saving.serialize_keras_object(init)))
        )
        assert isinstance(restored, GateBias)
        assert restored.get_config() == config

    def test_as_bias_initializer_of_keras_lstm(self):
        layer = keras.layers.LSTM(
            3, unit_forget_bias=False, bias_initializer=GateBias("lstm", forget=2.0, output=-1.0)
        )
        layer(np.zeros((1, 2, 2), "float32"))
        np.testing.assert_array_equal(
            layer.cell.bias.numpy(), [0] * 3 + [2] * 3 + [0] * 3 + [-1] * 3
        )


class TestChrono:
    def test_lstm_forget_is_log_uniform_and_input_its_negative(self):
        T, units = 50, 4000
        bias = keras.ops.convert_to_numpy(Chrono(T, seed=3)((4 * units,)))
        b_i, b_f, b_c, b_o = np.split(bias, 4)
        np.testing.assert_array_equal(b_i, -b_f)
        np.testing.assert_array_equal(b_c, 0)
        np.testing.assert_array_equal(b_o, 0)
        memory = np.exp(b_f.astype("float64"))
        # exp(b_f) ~ U[1, T - 1]: range, mean and quartiles.
        assert memory.min() >= 1.0 - 1e-5 and memory.max() <= T - 1 + 1e-3
        assert abs(memory.mean() - T / 2) < 1.0
        np.testing.assert_allclose(
            np.quantile(memory, [0.25, 0.75]), [1 + (T - 2) / 4, 1 + 3 * (T - 2) / 4], atol=1.5
        )

    @pytest.mark.parametrize("reset_after", [True, False])
    def test_gru_update_gate_only(self, reset_after):
        T, units = 20, 500
        shape = (2, 3 * units) if reset_after else (3 * units,)
        bias = keras.ops.convert_to_numpy(
            Chrono(T, layout="gru", reset_after=reset_after, seed=1)(shape)
        )
        row = bias[0] if reset_after else bias
        if reset_after:
            np.testing.assert_array_equal(bias[1], 0)
        b_z, b_r, b_h = np.split(row, 3)
        assert b_z.min() >= 0.0 and b_z.max() <= math.log(T - 1) + 1e-6
        assert b_z.std() > 0.3
        np.testing.assert_array_equal(b_r, 0)
        np.testing.assert_array_equal(b_h, 0)

    def test_two_timesteps_gives_zero(self):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(Chrono(2)((8,))), 0.0, atol=1e-7)

    def test_seed_is_deterministic(self):
        a = keras.ops.convert_to_numpy(Chrono(30, seed=7)((40,)))
        b = keras.ops.convert_to_numpy(Chrono(30, seed=7)((40,)))
        c = keras.ops.convert_to_numpy(Chrono(30, seed=8)((40,)))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)

    def test_unseeded_follows_keras_random_seed(self):
        keras.utils.set_random_seed(5)
        a = keras.ops.convert_to_numpy(Chrono(30)((40,)))
        keras.utils.set_random_seed(5)
        b = keras.ops.convert_to_numpy(Chrono(30)((40,)))
        np.testing.assert_array_equal(a, b)

    @pytest.mark.parametrize("value", [1, 0, -3, 1.5, float("inf")])
    @pytest.mark.backend_free
    def test_max_timesteps_below_two_raises(self, value):
        with pytest.raises(ValueError, match="max_timesteps"):
            Chrono(value)

    @pytest.mark.backend_free
    def test_invalid_arguments_raise(self):
        with pytest.raises(TypeError, match="max_timesteps"):
            Chrono("10")
        with pytest.raises(ValueError, match="layout"):
            Chrono(10, layout="rnn")
        with pytest.raises(TypeError, match="seed"):
            Chrono(10, seed=1.5)
        with pytest.raises(ValueError, match=r"shape=\(6,\)"):
            Chrono(10)((6,))

    def test_config_round_trip(self):
        init = Chrono(100, layout="gru", reset_after=False, seed=4)
        config = init.get_config()
        assert config == {"max_timesteps": 100, "layout": "gru", "reset_after": False, "seed": 4}
        restored = keras.saving.deserialize_keras_object(
            json.loads(json.dumps(keras.saving.serialize_keras_object(init)))
        )
        assert isinstance(restored, Chrono)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored((9,))), keras.ops.convert_to_numpy(init((9,)))
        )

    @pytest.mark.backend_free
    def test_public_path(self):
        assert keras_gradkit.initializers.Chrono is Chrono
        assert keras_gradkit.initializers.GateBias is GateBias
