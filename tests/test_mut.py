import inspect
import math

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.layers.mut import MUT1, MUT2, MUT3, MUT1Cell, MUT2Cell, MUT3Cell
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

B, T, D, U = 3, 5, 3, 4  # D != U: MUT1 and MUT2 learn the projection P
VARIANTS = {1: (MUT1Cell, MUT1), 2: (MUT2Cell, MUT2), 3: (MUT3Cell, MUT3)}
CLASSES = [cls for pair in VARIANTS.values() for cls in pair]


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def numpy_mut_step(variant, x, h, w):
    """One step of MUT1/2/3 as Jozefowicz et al. (2015) write it, with `x @ W`
    for `W x`. `w` maps the weight names to arrays: `kernel` holds the input
    matrices, `recurrent_kernel` the state matrices, in the order they appear
    in the equations (z, r, candidate); `input_projection` P, when present,
    replaces the bare `x_t` by `x_t P`."""
    u = h.shape[-1]
    K = np.split(w["kernel"], w["kernel"].shape[1] // u, axis=1)
    R = np.split(w["recurrent_kernel"], w["recurrent_kernel"].shape[1] // u, axis=1)
    b_z, b_r, b_h = np.split(w["bias"], 3) if "bias" in w else (0.0, 0.0, 0.0)
    bare = x @ w["input_projection"] if "input_projection" in w else x
    if variant == 1:
        (W_xz, W_xr), (W_hr, W_hh) = K, R
        z = _sigmoid(x @ W_xz + b_z)
        r = _sigmoid(x @ W_xr + h @ W_hr + b_r)
        candidate = np.tanh((r * h) @ W_hh + np.tanh(bare) + b_h)
    elif variant == 2:
        (W_xz, W_xh), (W_hz, W_hr, W_hh) = K, R
        z = _sigmoid(x @ W_xz + h @ W_hz + b_z)
        r = _sigmoid(bare + h @ W_hr + b_r)
        candidate = np.tanh((r * h) @ W_hh + x @ W_xh + b_h)
    else:
        (W_xz, W_xr, W_xh), (W_hz, W_hr, W_hh) = K, R
        z = _sigmoid(x @ W_xz + np.tanh(h) @ W_hz + b_z)
        r = _sigmoid(x @ W_xr + h @ W_hr + b_r)
        candidate = np.tanh((r * h) @ W_hh + x @ W_xh + b_h)
    return candidate * z + h * (1 - z)


def numpy_mut(variant, x, w, h0=None, mask=None):
    """The state after each step `(batch, timesteps, units)` and the last
    one; a masked step leaves the state as it was."""
    units = w["recurrent_kernel"].shape[0]
    h = np.zeros((x.shape[0], units)) if h0 is None else h0.astype("float64")
    states = []
    for t in range(x.shape[1]):
        new = numpy_mut_step(variant, x[:, t].astype("float64"), h, w)
        h = new if mask is None else np.where(mask[:, t : t + 1], new, h)
        states.append(h)
    return np.stack(states, axis=1), h


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _inputs(seed=0, width=D, batch=B, steps=T):
    return np.random.default_rng(seed).normal(size=(batch, steps, width)).astype("float32")


def _randomize(layer, seed=1):
    """Random, non-symmetric weights (each unit and gate different)."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(scale=0.6, size=w.shape).astype("float32") for w in layer.get_weights()]
    )


def _named_weights(layer):
    return {w.name: _np(w).astype("float64") for w in layer.weights}


@pytest.mark.parametrize("variant", [1, 2, 3])
class TestMUT:
    # The layer on an input of width `units` (the paper's equations exactly),
    # and the cell in keras.layers.RNN on another width (P), without bias.
    @pytest.mark.parametrize("subject, width, use_bias", [("layer", U, True), ("cell", D, False)])
    def test_equation_against_numpy(self, variant, subject, width, use_bias):
        cell_cls, layer_cls = VARIANTS[variant]
        x = _inputs(width=width)
        h0 = np.random.default_rng(5).normal(size=(B, U)).astype("float32")
        kwargs = {"use_bias": use_bias}
        layer = (
            layer_cls(U, return_sequences=True, return_state=True, **kwargs)
            if subject == "layer"
            else keras.layers.RNN(cell_cls(U, **kwargs), return_sequences=True, return_state=True)
        )
        layer.build(x.shape)
        _randomize(layer)
        expected_names = ["kernel", "recurrent_kernel"] + ["bias"] * use_bias
        if variant != 3 and width != U:
            expected_names.append("input_projection")
        assert [w.name for w in layer.weights] == expected_names
        sequence, state = layer(x, initial_state=h0)
        expected_sequence, expected_state = numpy_mut(variant, x, _named_weights(layer), h0)
        np.testing.assert_allclose(_np(sequence), expected_sequence, atol=1e-5)
        np.testing.assert_allclose(_np(state), expected_state, atol=1e-5)

    def test_gradients_against_finite_differences(self, variant):
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=3, width=2, batch=2, steps=3)  # width 2 != units 3: P too
        layer = layer_cls(3, return_sequences=True)
        layer.build(x.shape)
        _randomize(layer, seed=4)
        coeff = np.random.default_rng(6).normal(size=(2, 3, 3))
        names = [w.name for w in layer.trainable_weights]
        weights = _named_weights(layer)

        def numpy_loss(x_value, w):
            return float(np.sum(numpy_mut(variant, x_value, w)[0] * coeff))

        def finite_difference(array, loss, eps=1e-6):
            grad = np.zeros_like(array)
            for i in np.ndindex(array.shape):
                saved = array[i]
                array[i] = saved + eps
                up = loss()
                array[i] = saved - eps
                grad[i] = (up - loss()) / (2 * eps)
                array[i] = saved
            return grad

        x64 = x.astype("float64")
        expected_x = finite_difference(x64, lambda: numpy_loss(x64, weights))
        expected_w = [
            finite_difference(weights[n], lambda: numpy_loss(x64, weights)) for n in names
        ]
        coeff32 = coeff.astype("float32")
        value, (grad_x,), grad_w = value_and_gradients(
            lambda inputs: keras.ops.sum(keras.ops.multiply(layer(inputs), coeff32)),
            [x],
            layer.trainable_weights,
        )
        np.testing.assert_allclose(value, numpy_loss(x64, weights), rtol=1e-5)
        assert "input_projection" in names or variant == 3
        for name, got, expected in zip(["x"] + names, [grad_x] + grad_w, [expected_x] + expected_w):
            assert np.any(expected != 0), name
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3, err_msg=name)

    def test_masked_steps_keep_the_state(self, variant):
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=7)
        # Masked steps in the middle and at the end; masked inputs are huge, to
        # show that they have no say.
        mask = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
        x = np.where(mask[..., None], x, 100.0).astype("float32")
        layer = layer_cls(U, return_sequences=True, return_state=True)
        layer.build(x.shape)
        _randomize(layer)
        sequence, state = layer(x, mask=mask)
        expected_sequence, expected_state = numpy_mut(variant, x, _named_weights(layer), mask=mask)
        np.testing.assert_allclose(_np(state), expected_state, atol=1e-5)
        np.testing.assert_allclose(_np(sequence)[mask], expected_sequence[mask], atol=1e-5)

    def test_mixed_precision_follows_the_float32_equations(self, variant):
        # `mixed_float16`: float32 weights, float16 compute and output; the
        # output is the NumPy equations' (float64) to float16 rounding.
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=11)
        layer = layer_cls(U, return_sequences=True, dtype="mixed_float16")
        layer.build(x.shape)
        _randomize(layer)
        assert {keras.backend.standardize_dtype(w.dtype) for w in layer.weights} == {"float32"}
        sequence = _np(layer(x))
        assert sequence.dtype == np.float16
        expected, _ = numpy_mut(variant, x, _named_weights(layer))
        np.testing.assert_allclose(sequence, expected, rtol=1e-2, atol=1e-2)

    def test_go_backwards(self, variant):
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=8)
        # One variant runs unrolled: the unrolled and looped paths then both
        # meet the same reference.
        layer = layer_cls(
            U, go_backwards=True, return_sequences=True, return_state=True, unroll=variant == 2
        )
        layer.build(x.shape)
        _randomize(layer)
        sequence, state = layer(x)
        expected_sequence, expected_state = numpy_mut(variant, x[:, ::-1], _named_weights(layer))
        np.testing.assert_allclose(_np(sequence), expected_sequence, atol=1e-5)
        np.testing.assert_allclose(_np(state), expected_state, atol=1e-5)

    def test_stateful_two_calls_equal_one_long_call(self, variant):
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=9)
        stateful = layer_cls(U, return_sequences=True, stateful=True)
        stateful.build(x.shape)
        _randomize(stateful)
        first, second = stateful(x[:, :2]), stateful(x[:, 2:])
        got = np.concatenate([_np(first), _np(second)], axis=1)
        expected, last_state = numpy_mut(variant, x, _named_weights(stateful))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(_np(stateful.states[0]), last_state, atol=1e-5)

    def test_dropout_only_in_training(self, variant):
        _, layer_cls = VARIANTS[variant]
        x = _inputs(seed=10)
        # The dropout code is the cells' common code: each rate alone on one
        # variant, both on the third.
        rates = [
            {"dropout": 0.5},
            {"recurrent_dropout": 0.5},
            {"dropout": 0.3, "recurrent_dropout": 0.3},
        ]
        layer = layer_cls(U, seed=3, return_sequences=True, **rates[variant - 1])
        layer.build(x.shape)
        _randomize(layer)
        expected, _ = numpy_mut(variant, x, _named_weights(layer))
        np.testing.assert_allclose(_np(layer(x, training=False)), expected, atol=1e-5)
        trained = _np(layer(x, training=True))
        assert np.all(np.isfinite(trained)) and np.abs(trained - expected).max() > 1e-3
        # A new mask for each call.
        assert np.abs(_np(layer(x, training=True)) - trained).max() > 1e-6

    def test_layer_checks(self, variant, tmp_path):
        _, layer_cls = VARIANTS[variant]
        # Training and the .keras file for MUT1; the other two share its code
        # and go through a .keras file in `test_cells_in_a_keras_file`.
        run_layer_test(
            layer_cls,
            {"units": U, "update_bias": -1.0, "dropout": 0.1, "recurrent_dropout": 0.1, "seed": 2},
            _inputs(),
            expected_output_shape=(B, U),
            expected_num_trainable_weights=3 if variant == 3 else 4,
            tmp_path=tmp_path if variant == 1 else None,
            run_training=variant == 1,
        )

    def test_config_is_complete(self, variant):
        for cls in VARIANTS[variant]:
            instance = cls(
                U,
                recurrent_activation="hard_sigmoid",
                kernel_regularizer="l2",
                recurrent_constraint="non_neg",
                recurrent_dropout=0.25,
                seed=4,
                chrono_timesteps=30,
            )
            config = instance.get_config()
            parameters = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
            assert parameters <= set(config), parameters - set(config)
            assert "cell" not in config
            assert config["chrono_timesteps"] == 30 and config["seed"] == 4
            assert config["bias_initializer"] is None and config["recurrent_dropout"] == 0.25
            restored = assert_config_round_trip(instance)
            assert type(restored) is cls and restored.chrono_timesteps == 30


class TestGateBiases:
    def test_gate_arguments_set_the_bias(self):
        layer = MUT2(U, update_bias=-2.0, reset_bias=1.0, candidate_bias=0.5)
        layer.build((None, T, D))
        expected = np.repeat([-2.0, 1.0, 0.5], U)
        np.testing.assert_array_equal(_np(layer.cell.bias), expected)
        default = MUT1(U)
        default.build((None, T, D))
        np.testing.assert_array_equal(_np(default.cell.bias), np.zeros(3 * U))
        given = MUT3(U, bias_initializer="ones")
        given.build((None, T, D))
        np.testing.assert_array_equal(_np(given.cell.bias), np.ones(3 * U))
        assert given.get_config()["bias_initializer"]["class_name"] == "Ones"

    def test_chrono_is_negative_for_the_write_gate(self):
        """`1 - z` keeps the state, so chrono sets `b_z = -log(U[1, T - 1])`."""
        # Constant kernels: only the bias is random here.
        zeros = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}
        layer = MUT1(20, chrono_timesteps=40, seed=1, **zeros)
        layer.build((None, T, D))
        b_z, b_r, b_h = np.split(_np(layer.cell.bias), 3)
        assert b_z.max() <= 0 and b_z.min() >= -math.log(39) - 1e-6 and b_z.std() > 0.3
        np.testing.assert_array_equal(np.concatenate([b_r, b_h]), 0)
        gru_chrono = keras_gradkit.initializers.Chrono(40, layout="gru", reset_after=False, seed=1)
        np.testing.assert_allclose(b_z, -_np(gru_chrono((60,)))[:20], rtol=1e-6)
        restored = MUT1.from_config(layer.get_config())
        restored.build((None, T, D))
        np.testing.assert_array_equal(_np(restored.cell.bias), _np(layer.cell.bias))

    def test_negative_update_bias_keeps_the_state(self):
        x = np.zeros((1, 1, U), "float32")
        h0 = np.full((1, U), 0.7, "float32")
        states = []
        for update_bias in (0.0, -9.0):
            layer = MUT3(U, update_bias=update_bias, seed=1)
            states.append(_np(layer(x, initial_state=h0)))
        assert np.abs(states[1] - h0).max() < 0.01 < np.abs(states[0] - h0).max()


class TestArguments:
    @pytest.mark.backend_free
    @pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"units": 0}, "units"),
            ({"dropout": 1.0}, "dropout"),
            ({"recurrent_dropout": -0.1}, "recurrent_dropout"),
            ({"update_bias": float("nan")}, "update_bias"),
            ({"chrono_timesteps": 1}, "chrono_timesteps"),
            ({"chrono_timesteps": 10, "update_bias": -1.0}, "chrono_timesteps"),
            ({"bias_initializer": "ones", "reset_bias": 1.0}, "bias_initializer"),
            ({"use_bias": False, "candidate_bias": 1.0}, "use_bias"),
            ({"use_bias": False, "chrono_timesteps": 10}, "use_bias"),
        ],
    )
    def test_invalid_arguments_raise(self, cls, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            cls(**{"units": U, **kwargs})

    @pytest.mark.backend_free
    @pytest.mark.parametrize(
        "cls, kwargs, name",
        [
            (MUT1Cell, {"units": 2.5}, "units"),
            (MUT2, {"use_bias": "yes"}, "use_bias"),
            (MUT3Cell, {"seed": "a"}, "seed"),
            (MUT1, {"return_sequences": 1}, "return_sequences"),
            (MUT2, {"stateful": None}, "stateful"),
        ],
    )
    def test_type_errors(self, cls, kwargs, name):
        with pytest.raises(TypeError, match=f"`{name}`"):
            cls(**{"units": U, **kwargs})

    def test_unknown_input_width_raises_in_build(self):
        with pytest.raises(ValueError, match=r"input_shape=\(None, None\)"):
            MUT1Cell(U).build((None, None))

    @pytest.mark.backend_free
    @pytest.mark.parametrize(
        "ours, keras_cls", [(MUT1, keras.layers.GRU), (MUT1Cell, keras.layers.GRUCell)]
    )
    def test_arguments_in_keras_gru_order(self, ours, keras_cls):
        """Keras's GRU arguments, minus `reset_after` and `use_cudnn`, in
        Keras's order; then the package's gate-bias arguments, as in its GRU."""

        def names(cls):
            return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

        theirs = [n for n in names(keras_cls) if n not in ("reset_after", "use_cudnn", "kwargs")]
        gates = ["update_bias", "reset_bias", "candidate_bias", "chrono_timesteps"]
        assert names(ours) == theirs + gates + ["kwargs"]

    @pytest.mark.backend_free
    def test_registered_and_documented(self):
        for cls in CLASSES:
            assert keras.saving.get_registered_name(cls) == f"keras_gradkit>{cls.__name__}"
            assert keras.saving.get_registered_object(f"keras_gradkit>{cls.__name__}") is cls
            assert f"keras_gradkit.layers.{cls.__name__}" in cls.__doc__


class TestModels:
    def test_cells_in_a_keras_file(self, tmp_path):
        inputs = keras.Input((T, D))
        branches = [
            keras.layers.RNN(MUT1Cell(U, update_bias=-1.0))(inputs),
            keras.layers.Bidirectional(MUT2(U, chrono_timesteps=8))(inputs),
        ]
        model = keras.Model(inputs, keras.layers.Concatenate()(branches))
        _randomize(model)
        loaded = assert_keras_file_round_trip(model, _inputs(), tmp_path)
        (rnn,) = [x for x in loaded.layers if type(x) is keras.layers.RNN]
        assert type(rnn.cell) is MUT1Cell and rnn.cell.update_bias == -1.0
        (bidirectional,) = [x for x in loaded.layers if isinstance(x, keras.layers.Bidirectional)]
        assert isinstance(bidirectional.backward_layer, MUT2)
        assert (
            bidirectional.backward_layer.go_backwards
            and bidirectional.forward_layer.chrono_timesteps == 8
        )

    def test_diagnose_through_time(self):
        """`keras_gradkit.diagnose` probes the MUT1 layer's input sequence, with
        the per-step gradient the backend itself gives."""
        steps = 10
        rng = np.random.default_rng(11)
        x = rng.normal(size=(4, steps, D)).astype("float32")
        y = rng.normal(size=(4, 1)).astype("float32")
        model = keras.Sequential(
            [keras.Input((steps, D)), MUT1(U, name="mut1"), keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")
        report = keras_gradkit.diagnose(model, x, y)
        summary = report.measures["time"]["mut1"]
        _, (grad,), _ = value_and_gradients(
            lambda inputs: keras.ops.sum(
                keras.ops.square(keras.ops.subtract(model(inputs, training=True), y))
            ),
            [x],
        )
        norms = np.linalg.norm(grad, axis=-1).mean(axis=0)
        assert summary["steps"] == steps
        np.testing.assert_allclose(summary["peak"], norms.max(), rtol=1e-4)
        np.testing.assert_allclose(summary["early"], norms[:1].mean(), rtol=1e-4, atol=1e-9)

    @pytest.mark.tensorflow_only  # SavedModel export and TensorFlow serving
    def test_export_serves_without_keras_gradkit(self, tmp_path):
        inputs = keras.Input((T, D))
        masked = keras.layers.Masking(0.0)(inputs)
        branches = [
            MUT1(U, go_backwards=True)(masked),
            MUT2(U, chrono_timesteps=10)(masked),
            keras.layers.RNN(MUT3Cell(U))(masked),
        ]
        model = keras.Model(inputs, keras.layers.Concatenate()(branches))
        _randomize(model)
        x = _inputs()
        x[1, 3:] = 0.0
        assert_export_serves(model, x, tmp_path)
