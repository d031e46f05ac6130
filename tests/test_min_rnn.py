import keras
import numpy as np
import pytest
from gradient_testing import value_and_gradients
from layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

import keras_gradkit as gk
from keras_gradkit.diagnostics import graph
from keras_gradkit.layers.min_rnn import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell

BACKEND = keras.backend.backend()
LAYERS = {"min_gru": (MinGRU, MinGRUCell), "min_lstm": (MinLSTM, MinLSTMCell)}
MODES = ("parallel", "sequential")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_coefficients(name, x_t, kernel, bias):
    """`(a_t, b_t)` of `h_t = a_t h_{t-1} + b_t`, from the paper's equations
    (linear candidate); the gates in kernel order (GRU: z, h; LSTM: i, f, h)."""
    units = kernel.shape[1] // (2 if name == "min_gru" else 3)
    pre = x_t @ kernel + bias
    if name == "min_gru":
        z, candidate = sigmoid(pre[:, :units]), pre[:, units:]
        return 1.0 - z, z * candidate
    i, f = sigmoid(pre[:, :units]), sigmoid(pre[:, units : 2 * units])
    candidate = pre[:, 2 * units :]
    return f / (f + i), i / (f + i) * candidate


def numpy_min_rnn(name, x, kernel, bias, h0=None, mask=None, go_backwards=False, zero_output=False):
    """The recurrence step by step in float64, with Keras's conventions for
    masked steps: the state is kept and the output repeats the previous one
    (zeros with `zero_output`). Before the first unmasked step, Keras's JAX
    backend repeats the initial state where TensorFlow and PyTorch output
    zeros. Returns `(outputs (batch, steps, units) in processed order, state)`."""
    x = x.astype("float64")
    batch, steps, _ = x.shape
    units = kernel.shape[1] // (2 if name == "min_gru" else 3)
    h = np.zeros((batch, units)) if h0 is None else h0.astype("float64")
    out_prev = h.copy() if BACKEND == "jax" else np.zeros_like(h)
    outputs = []
    for t in range(steps - 1, -1, -1) if go_backwards else range(steps):
        a, b = numpy_coefficients(name, x[:, t], kernel.astype("float64"), bias.astype("float64"))
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t][:, None]
        h = np.where(keep, a * h + b, h)
        out_prev = np.where(keep, h, 0.0 if zero_output else out_prev)
        outputs.append(out_prev)
    return np.stack(outputs, axis=1), h


def random_weights(rng, name, input_dim, units):
    gates = 2 if name == "min_gru" else 3
    kernel = rng.normal(0.0, 0.7, size=(input_dim, gates * units)).astype("float32")
    bias = rng.normal(0.0, 0.5, size=(gates * units,)).astype("float32")
    return [kernel, bias]


def ragged_mask(batch, steps):
    mask = np.ones((batch, steps), bool)
    mask[0, steps - 3 :] = False  # right padding
    mask[1, :2] = False  # left padding
    if batch > 2:
        mask[2, steps // 2] = False  # a hole
    if batch > 3:
        mask[3, :] = False  # nothing at all
    return mask


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def built(layer, x, weights):
    layer(x)
    layer.set_weights(weights)
    return layer


def weighted_loss(outputs):
    """A loss that weighs every output, unit and time step differently."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    total = 0.0
    for k, o in enumerate(outputs):
        scale = np.linspace(0.5, 1.5, o.shape[-1]).astype("float32") * (k + 1)
        if len(o.shape) == 3:
            scale = scale * np.linspace(1.0, 2.0, o.shape[1]).astype("float32")[:, None]
        scale = keras.ops.convert_to_tensor(scale)
        total = total + keras.ops.sum(o * scale) + keras.ops.sum(keras.ops.square(o))
    return total


def outputs_and_grads(layer, x, h0=None, mask=None, training=False):
    """The layer's outputs and the gradients of `weighted_loss` w.r.t. its
    weights, `x` and `h0` (in that order)."""
    mask = None if mask is None else keras.ops.convert_to_tensor(mask)

    def call(x, *h):
        return layer(x, initial_state=list(h) or None, mask=mask, training=training)

    inputs = [x] + ([h0] if h0 is not None else [])
    _, input_grads, weight_grads = value_and_gradients(
        lambda *args: weighted_loss(call(*args)), inputs, layer.trainable_weights
    )
    outs = call(*[keras.ops.convert_to_tensor(t) for t in inputs])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [to_numpy(o) for o in outs], weight_grads + input_grads


def assert_close(actual, expected, tol=1e-5):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, atol=tol * scale, rtol=tol)


class TestAgainstNumPy:
    @pytest.mark.parametrize("name", list(LAYERS))
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("go_backwards,masked", [(False, False), (True, True)])
    def test_outputs_and_state_match_the_equations(self, name, mode, go_backwards, masked):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, name, 3, 4)
        h0 = rng.normal(size=(4, 4)).astype("float32")
        mask = ragged_mask(4, 8) if masked else None
        layer = LAYERS[name][0](
            4, return_sequences=True, return_state=True, go_backwards=go_backwards, mode=mode
        )
        built(layer, x, weights)
        mask_tensor = None if mask is None else keras.ops.convert_to_tensor(mask)
        outputs, state = layer(x, initial_state=[h0], mask=mask_tensor)
        expected_outputs, expected_state = numpy_min_rnn(
            name, x, *weights, h0=h0, mask=mask, go_backwards=go_backwards
        )
        assert_close(to_numpy(outputs), expected_outputs)
        assert_close(to_numpy(state), expected_state)

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_cell_matches_the_equations(self, name):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, name, 3, 4)
        rnn = built(keras.layers.RNN(LAYERS[name][1](4), return_sequences=True), x, weights)
        assert_close(to_numpy(rnn(x)), numpy_min_rnn(name, x, *weights)[0])

    @pytest.mark.parametrize("name", list(LAYERS))
    @pytest.mark.parametrize("mode", MODES)
    def test_gradients_match_finite_differences(self, name, mode):
        # Central differences of the float64 NumPy equations, against the
        # layer's automatic gradient; masked, with an initial state.
        rng = np.random.default_rng(2)
        x = rng.normal(size=(3, 5, 2)).astype("float32")
        kernel, bias = random_weights(rng, name, 2, 3)
        h0 = rng.normal(size=(3, 3)).astype("float32")
        mask = ragged_mask(3, 5)
        coefficients = rng.normal(size=(3, 5, 3))  # the loss weighs each output
        weighing = keras.ops.convert_to_tensor(coefficients.astype("float32"))

        def numpy_loss(x, kernel, bias, h0):
            outputs, state = numpy_min_rnn(name, x, kernel, bias, h0=h0, mask=mask)
            return np.sum(outputs * coefficients) + np.sum(state**2)

        layer = built(
            LAYERS[name][0](3, return_sequences=True, return_state=True, mode=mode),
            x,
            [kernel, bias],
        )

        def loss(x, h0):
            outputs, state = layer(x, initial_state=[h0], mask=keras.ops.convert_to_tensor(mask))
            return keras.ops.sum(outputs * weighing) + keras.ops.sum(state**2)

        _, (gx, gh0), (gkernel, gbias) = value_and_gradients(loss, [x, h0], layer.trainable_weights)
        arrays = [x.astype("float64"), kernel.astype("float64"), bias.astype("float64"), h0]
        for index, got in zip(range(4), (gx, gkernel, gbias, gh0)):
            expected = np.zeros(arrays[index].shape)
            for position in np.ndindex(arrays[index].shape):
                for sign in (1.0, -1.0):
                    moved = [a.astype("float64").copy() for a in arrays]
                    moved[index][position] += sign * 1e-5
                    expected[position] += sign * numpy_loss(*moved) / 2e-5
            assert_close(got, expected, 1e-4)


class TestCodePathsAgree:
    @pytest.mark.parametrize("name", list(LAYERS))
    @pytest.mark.parametrize(
        "return_sequences,go_backwards,zero_output_for_mask",
        [(True, True, False), (False, False, True)],
    )
    def test_parallel_sequential_and_keras_loop_agree(
        self, name, return_sequences, go_backwards, zero_output_for_mask
    ):
        # The two scans against `keras.layers.RNN(cell)`, Keras's own loop
        # and so its conventions for masked outputs; values and gradients.
        rng = np.random.default_rng(3)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, name, 3, 4)
        h0 = rng.normal(size=(4, 4)).astype("float32")
        mask = ragged_mask(4, 8)
        layer_cls, cell_cls = LAYERS[name]
        kwargs = dict(
            return_sequences=return_sequences,
            return_state=True,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output_for_mask,
        )
        reference = built(keras.layers.RNN(cell_cls(4), **kwargs), x, weights)
        want_out, want_grad = outputs_and_grads(reference, x, h0, mask)
        for mode in MODES:
            layer = built(layer_cls(4, mode=mode, **kwargs), x, weights)
            got_out, got_grad = outputs_and_grads(layer, x, h0, mask, training=True)
            for g, w in zip(got_out + got_grad, want_out + want_grad):
                assert_close(g, w)

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_masked_steps_leave_the_state_unchanged(self, name):
        # Padding before or after a sequence, masked, changes nothing: the
        # state is that of the sequence alone, from the same initial state.
        rng = np.random.default_rng(5)
        x = rng.normal(size=(4, 5, 3)).astype("float32")
        h0 = rng.normal(size=(4, 4)).astype("float32")
        noise = rng.normal(size=(4, 3, 3)).astype("float32") * 10
        weights = random_weights(rng, name, 3, 4)
        for mode in MODES:
            layer = built(LAYERS[name][0](4, return_state=True, mode=mode), x, weights)
            _, alone = layer(x, initial_state=[h0])
            for padded, mask in (
                (np.concatenate([noise, x], 1), np.arange(8) >= 3),
                (np.concatenate([x, noise], 1), np.arange(8) < 5),
            ):
                mask = keras.ops.convert_to_tensor(np.broadcast_to(mask, (4, 8)))
                _, state = layer(padded, initial_state=[h0], mask=mask)
                assert_close(to_numpy(state), to_numpy(alone), 1e-6)

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_return_state_is_the_last_output(self, name):
        x = np.random.default_rng(7).normal(size=(4, 8, 3)).astype("float32")
        output, state = LAYERS[name][0](4, return_state=True)(x)
        assert tuple(output.shape) == tuple(state.shape) == (4, 4)
        assert_close(to_numpy(output), to_numpy(state), 0)
        sequences, state = LAYERS[name][0](4, return_sequences=True, return_state=True)(x)
        assert tuple(sequences.shape) == (4, 8, 4)
        assert_close(to_numpy(sequences[:, -1]), to_numpy(state), 0)

    def test_stateful_matches_one_long_sequence(self):
        # The base class is the two layers' own: one of them suffices.
        rng = np.random.default_rng(8)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, "min_gru", 3, 4)
        stateful = built(MinGRU(4, stateful=True, return_sequences=True), x[:, :4], weights)
        stateful.reset_states()
        first, second = to_numpy(stateful(x[:, :4])), to_numpy(stateful(x[:, 4:]))
        expected, _ = numpy_min_rnn("min_gru", x, *weights)
        assert_close(np.concatenate([first, second], axis=1), expected)

    def test_dropout_is_one_mask_per_sequence_as_in_the_keras_loop(self):
        rng = np.random.default_rng(9)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, "min_lstm", 3, 4)
        kwargs = dict(dropout=0.5, seed=11)
        expected, _ = numpy_min_rnn("min_lstm", x, *weights)
        outputs = []
        for layer in [MinLSTM(4, mode=m, return_sequences=True, **kwargs) for m in MODES] + [
            keras.layers.RNN(MinLSTMCell(4, **kwargs), return_sequences=True)
        ]:
            built(layer, x, weights)
            outputs.append(to_numpy(layer(x, training=True)))
            assert_close(to_numpy(layer(x)), expected)
        for other in outputs[1:]:
            assert_close(other, outputs[0])
        assert not np.allclose(outputs[0], expected, atol=1e-3)

    def test_bidirectional(self):
        rng = np.random.default_rng(10)
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        weights = random_weights(rng, "min_lstm", 3, 4)
        bidirectional = keras.layers.Bidirectional(MinLSTM(4, return_sequences=True))
        built(bidirectional, x, weights + weights)
        forward, backward = np.split(to_numpy(bidirectional(x)), 2, axis=-1)
        assert_close(forward, numpy_min_rnn("min_lstm", x, *weights)[0])
        reversed_outputs = numpy_min_rnn("min_lstm", x, *weights, go_backwards=True)[0]
        assert_close(backward, reversed_outputs[:, ::-1])


class TestLayerContract:
    @pytest.mark.parametrize("name,return_sequences", [("min_gru", True), ("min_lstm", False)])
    def test_run_layer_test(self, name, return_sequences, tmp_path):
        x = np.random.default_rng(11).normal(size=(4, 8, 3)).astype("float32")
        shape = (4, 8, 4) if return_sequences else (4, 4)
        run_layer_test(
            LAYERS[name][0],
            {"units": 4, "return_sequences": return_sequences, "dropout": 0.25, "seed": 3},
            x,
            expected_output_shape=shape,
            expected_num_trainable_weights=2,
            tmp_path=tmp_path,
        )

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_mixed_precision_scans_in_float32(self, name):
        # Float16 inputs and kernel, float32 gates and scan: over 64 steps
        # the float16 output is the float32 layer's, rounded.
        rng = np.random.default_rng(12)
        x = rng.normal(size=(4, 64, 3)).astype("float32")
        weights = random_weights(rng, name, 3, 4)
        for mode in MODES:
            layer = built(LAYERS[name][0](4, mode=mode, dtype="mixed_float16"), x, weights)
            out = to_numpy(layer(x))
            assert out.dtype == np.float16
            a, b = layer.cell.coefficients(keras.ops.ones((4, len(weights[1])), "float16"))
            assert [keras.backend.standardize_dtype(t.dtype) for t in (a, b)] == ["float32"] * 2
            expected = to_numpy(built(LAYERS[name][0](4, mode=mode), x, weights)(x))
            np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2)

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_config_holds_every_argument(self, name):
        layer_cls, cell_cls = LAYERS[name]
        gates = (
            {"update_bias": -1.5, "candidate_bias": 0.25}
            if name == "min_gru"
            else {"forget_bias": 1.0, "input_bias": -0.5, "candidate_bias": 0.25}
        )
        layer = layer_cls(
            3,
            activation="tanh",
            kernel_initializer="orthogonal",
            kernel_regularizer="l2",
            bias_regularizer="l1",
            activity_regularizer="l2",
            kernel_constraint="non_neg",
            bias_constraint="max_norm",
            dropout=0.1,
            seed=5,
            return_sequences=True,
            return_state=True,
            go_backwards=True,
            stateful=True,
            mode="sequential",
            zero_output_for_mask=True,
            name="recurrent",
            **gates,
        )
        restored = assert_config_round_trip(layer)
        config = restored.get_config()
        for key, value in {**gates, "mode": "sequential", "seed": 5, "dropout": 0.1}.items():
            assert config[key] == value and getattr(restored.cell, key, value) == value
        assert config["zero_output_for_mask"] and config["stateful"] and config["go_backwards"]
        assert config["activity_regularizer"] is not None
        assert restored.cell.activation.__name__ == "tanh"
        assert_config_round_trip(cell_cls(3, bias_initializer="ones", seed=2))

    @pytest.mark.parametrize("name", list(LAYERS))
    def test_gate_arguments_set_the_initial_bias(self, name):
        layer_cls, _ = LAYERS[name]
        if name == "min_gru":
            layer, expected = layer_cls(2, update_bias=-2.0, candidate_bias=0.5), [-2, -2, 0.5, 0.5]
        else:
            layer = layer_cls(2, forget_bias=1.0, input_bias=-1.0, candidate_bias=0.5)
            expected = [-1, -1, 1, 1, 0.5, 0.5]  # gates i, f, h̃
        layer(np.zeros((1, 3, 4), "float32"))
        assert [w.name for w in layer.weights if w.trainable] == ["kernel", "bias"]
        np.testing.assert_array_equal(to_numpy(layer.cell.bias), np.array(expected, "float32"))
        given = layer_cls(2, bias_initializer="ones")
        given(np.zeros((1, 3, 4), "float32"))
        np.testing.assert_array_equal(to_numpy(given.cell.bias), 1.0)
        without = layer_cls(2, use_bias=False)
        without(np.zeros((1, 3, 4), "float32"))
        assert [w.name for w in without.trainable_weights] == ["kernel"]

    @pytest.mark.parametrize("name,mode", [("min_gru", "parallel"), ("min_lstm", "sequential")])
    def test_keras_file_round_trip_of_a_masked_model(self, name, mode, tmp_path):
        inputs = keras.Input((None, 3))
        hidden = keras.layers.Masking(0.0)(inputs)
        hidden = LAYERS[name][0](4, return_sequences=True, mode=mode)(hidden)
        model = keras.Model(inputs, LAYERS[name][0](2, go_backwards=True, mode=mode)(hidden))
        x = np.random.default_rng(13).normal(size=(4, 8, 3)).astype("float32")
        x[0, 5:] = 0.0
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        assert loaded.layers[2].mode == mode

    @pytest.mark.tensorflow_only
    def test_export_serves_without_the_package(self, tmp_path):
        # The SavedModel's signature leaves the length open, (None, None, 3):
        # it serves Keras's loop over the cell, checked against the scans.
        inputs = keras.Input((None, 3))
        hidden = keras.layers.Masking(0.0)(inputs)
        hidden = MinLSTM(4, return_sequences=True, mode="sequential")(hidden)
        model = keras.Model(inputs, MinGRU(2, go_backwards=True, mode="parallel")(hidden))
        x = np.random.default_rng(14).normal(size=(4, 8, 3)).astype("float32")
        x[1, :2] = 0.0
        x[0, 6:] = 0.0
        assert_export_serves(model, x, tmp_path)

    def test_diagnose_measures_the_layer_through_time(self):
        rng = np.random.default_rng(15)
        model = keras.Sequential(
            [
                keras.Input((8, 3)),
                keras.layers.Dense(4),
                MinGRU(5, name="min_gru"),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="adam", loss="mse")
        x = rng.normal(size=(4, 8, 3)).astype("float32")
        report = gk.diagnose(model, x, rng.normal(size=(4, 1)).astype("float32"))
        assert graph.recurrent_layers(model) == [model.layers[1]]
        assert set(report.measures["time"]) == {"input", "min_gru"}
        assert report.measures["time"]["min_gru"]["steps"] == 8


class TestArgumentErrors:
    @pytest.mark.backend_free
    @pytest.mark.parametrize("cls", [MinGRU, MinLSTM, MinGRUCell, MinLSTMCell])
    @pytest.mark.parametrize(
        "kwargs,error,pattern",
        [
            ({"units": 0}, ValueError, r"`units`.*units=0"),
            ({"units": 2.5}, TypeError, r"`units`.*units=2.5"),
            ({"dropout": 1.0}, ValueError, r"`dropout`.*dropout=1.0"),
            ({"use_bias": 1}, TypeError, r"`use_bias`.*use_bias=1"),
            ({"candidate_bias": float("nan")}, ValueError, r"`candidate_bias`.*nan"),
            (
                {"candidate_bias": 1.0, "bias_initializer": "ones"},
                ValueError,
                r"given twice.*candidate_bias=1.0.*bias_initializer='ones'",
            ),
            (
                {"use_bias": False, "candidate_bias": 1.0},
                ValueError,
                r"`use_bias=False`.*candidate_bias=1.0",
            ),
            (
                {"use_bias": False, "bias_regularizer": "l2"},
                ValueError,
                r"`use_bias=False`.*bias_regularizer='l2'",
            ),
        ],
    )
    def test_cell_arguments(self, cls, kwargs, error, pattern):
        kwargs = {"units": 3, **kwargs}
        with pytest.raises(error, match=pattern):
            cls(**kwargs)

    @pytest.mark.backend_free
    @pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
    def test_layer_arguments(self, cls):
        with pytest.raises(
            ValueError, match=r"`mode`.*'auto', 'parallel', 'sequential'.*mode='fast'"
        ):
            cls(3, mode="fast")
        with pytest.raises(ValueError, match=r"`unroll=True`.*mode='sequential'.*unroll=True"):
            cls(3, unroll=True)

    def test_gate_arguments_are_the_layers_own(self):
        with pytest.raises(ValueError, match="forget_bias"):
            MinGRU(3, forget_bias=1.0)
        with pytest.raises(ValueError, match="update_bias"):
            MinLSTM(3, update_bias=1.0)

    @pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
    def test_input_shapes(self, cls):
        with pytest.raises(ValueError, match=r"rank 3.*\(2, 3\)"):
            cls(3)(np.zeros((2, 3), "float32"))
        with pytest.raises(ValueError, match=r"feature dimension.*None"):
            cls(3)(keras.KerasTensor((2, 5, None)))
