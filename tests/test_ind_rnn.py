import inspect
import re

import keras
import numpy as np
import pytest
from gradient_testing import value_and_gradients
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

import keras_gradkit as gk
from keras_gradkit.layers.ind_rnn import recurrent_bound

BACKEND = keras.backend.backend()

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "linear": lambda z: z,
    "elu": lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1.0),
}


def numpy_ind_rnn(
    x, kernel, u, bias, h0=None, activation="relu", mask=None, go_backwards=False, zero_output=False
):
    """The paper's equation, h_t = act(W x_t + u * h_{t-1} + b), step by step,
    with Keras's masking conventions: a masked step keeps the state and repeats
    the previous output, or outputs zeros with `zero_output`. Before the first
    unmasked step, Keras's JAX backend repeats the initial state where
    TensorFlow and PyTorch output zeros."""
    act = ACTIVATIONS[activation]
    batch, steps, _ = x.shape
    h = np.zeros((batch, kernel.shape[1])) if h0 is None else h0.astype("float64")
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    out_prev = h.copy() if BACKEND == "jax" else np.zeros_like(h)
    outputs = []
    for t in order:
        new = act(x[:, t] @ kernel + u * h + bias)
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t][:, None]
        h = np.where(keep, new, h)
        out_prev = np.where(keep, new, 0.0 if zero_output else out_prev)
        outputs.append(out_prev)
    return np.stack(outputs, axis=1), h


def random_weights(rng, input_dim, units, recurrent_scale=1.0):
    kernel = rng.normal(0.0, 0.5, size=(input_dim, units)).astype("float32")
    u = rng.uniform(-recurrent_scale, recurrent_scale, size=(units,)).astype("float32")
    bias = rng.normal(0.0, 0.1, size=(units,)).astype("float32")
    return [kernel, u, bias]


def ragged_mask(batch, steps):
    mask = np.ones((batch, steps), bool)
    mask[0, steps - 3 :] = False  # right padding
    if batch > 1:
        mask[1, :2] = False  # left padding
    if batch > 2:
        mask[2, steps // 2] = False  # a hole
    return mask


def build_pair(units, x, weights, **kwargs):
    """A fast IndRNN and keras.layers.RNN(IndRNNCell) sharing `weights`."""
    cell_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k
        not in (
            "return_sequences",
            "return_state",
            "go_backwards",
            "zero_output_for_mask",
            "stateful",
        )
    }
    rnn_kwargs = {k: v for k, v in kwargs.items() if k not in cell_kwargs}
    reference = keras.layers.RNN(gk.layers.IndRNNCell(units, **cell_kwargs), **rnn_kwargs)
    fast = gk.layers.IndRNN(units, **kwargs)
    reference(x)
    fast(x)
    reference.set_weights(weights)
    fast.set_weights(weights)
    return fast, reference


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def weighted_loss(outputs):
    """A loss that weighs every output and time step differently."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    total = 0.0
    for k, o in enumerate(outputs):
        scale = keras.ops.convert_to_tensor(
            np.linspace(0.5, 1.5, o.shape[-1]).astype("float32") * (k + 1)
        )
        total = total + keras.ops.sum(o * scale) + keras.ops.sum(keras.ops.square(o))
    return total


def outputs_and_grads(layer, x, h0=None, mask=None, training=False):
    """The layer's outputs and the gradients of `weighted_loss` w.r.t. its
    trainable weights, `x` and `h0` (in that order), on any backend."""
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


def assert_close_relative(actual, expected, tol):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, atol=tol * scale, rtol=tol)


class TestIndRNNCellAgainstNumPy:
    @pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
    def test_cell_matches_numpy_equation(self, activation):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3, 7, 4)).astype("float32")
        weights = random_weights(rng, 4, 5)
        layer = keras.layers.RNN(
            gk.layers.IndRNNCell(5, activation=activation), return_sequences=True, return_state=True
        )
        layer(x)
        layer.set_weights(weights)
        outputs, state = layer(x)
        expected_outputs, expected_state = numpy_ind_rnn(x, *weights, activation=activation)
        np.testing.assert_allclose(to_numpy(outputs), expected_outputs, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(to_numpy(state), expected_state, atol=1e-5, rtol=1e-5)

    def test_weights_are_named_and_ordered(self):
        cell = gk.layers.IndRNNCell(5)
        keras.layers.RNN(cell)(np.zeros((2, 3, 4), "float32"))
        names = [w.name for w in cell.weights]
        shapes = [tuple(w.shape) for w in cell.weights]
        assert names == ["kernel", "recurrent_kernel", "bias"]
        assert shapes == [(4, 5), (5,), (5,)]
        fast = gk.layers.IndRNN(5)
        fast(np.zeros((2, 3, 4), "float32"))
        assert [w.name for w in fast.weights] == names
        assert [tuple(w.shape) for w in fast.weights] == shapes

    def test_no_bias(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 5, 3)).astype("float32")
        kernel, u, _ = random_weights(rng, 3, 4)
        for layer in (
            gk.layers.IndRNN(4, use_bias=False),
            keras.layers.RNN(gk.layers.IndRNNCell(4, use_bias=False)),
        ):
            layer(x)
            assert len(layer.weights) == 2
            layer.set_weights([kernel, u])
            _, expected = numpy_ind_rnn(x, kernel, u, np.zeros(4))
            np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)


class TestFastLayerEqualsCell:
    @pytest.mark.parametrize(
        "activation,go_backwards,masked",
        [
            ("relu", False, False),
            ("relu", True, True),
            ("relu", False, True),
            ("tanh", True, False),
            ("tanh", False, True),
            ("sigmoid", True, True),
            ("linear", False, True),
            ("elu", True, True),  # differentiated automatically on every backend
        ],
    )
    def test_sequences_states_and_gradients(self, activation, go_backwards, masked):
        rng = np.random.default_rng(2)
        x = rng.normal(size=(3, 12, 4)).astype("float32")
        weights = random_weights(rng, 4, 5)
        kwargs = dict(
            activation=activation,
            return_sequences=True,
            return_state=True,
            go_backwards=go_backwards,
        )
        fast, reference = build_pair(5, x, weights, **kwargs)
        mask = ragged_mask(3, 12) if masked else None
        h0 = rng.normal(size=(3, 5)).astype("float32")
        want_out, want_grad = outputs_and_grads(reference, x, h0, mask)
        # In training and in inference (engines may differ, e.g. XLA on TensorFlow).
        for training in (False, True):
            got_out, got_grad = outputs_and_grads(fast, x, h0, mask, training=training)
            for g, w in zip(got_out, want_out):
                assert_close_relative(g, w, 1e-5)
            for g, w in zip(got_grad, want_grad):
                assert_close_relative(g, w, 1e-5)
        expected_seq, expected_state = numpy_ind_rnn(
            x, *weights, h0=h0, activation=activation, mask=mask, go_backwards=go_backwards
        )
        assert_close_relative(got_out[0], expected_seq, 1e-5)
        assert_close_relative(got_out[1], expected_state, 1e-5)

    @pytest.mark.parametrize(
        "masked,zero_output_for_mask,go_backwards",
        [(False, False, False), (True, False, True), (True, True, False), (True, True, True)],
    )
    @pytest.mark.parametrize("training", [False, True])
    def test_last_output_and_gradients(self, masked, zero_output_for_mask, go_backwards, training):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(3, 9, 2)).astype("float32")
        weights = random_weights(rng, 2, 6)
        fast, reference = build_pair(
            6,
            x,
            weights,
            return_state=True,
            zero_output_for_mask=zero_output_for_mask,
            go_backwards=go_backwards,
        )
        mask = ragged_mask(3, 9) if masked else None
        if masked:
            mask[1, :] = False  # a fully padded sample
        got_out, got_grad = outputs_and_grads(fast, x, None, mask, training=training)
        want_out, want_grad = outputs_and_grads(reference, x, None, mask, training=training)
        for g, w in zip(got_out + got_grad, want_out + want_grad):
            assert_close_relative(g, w, 1e-5)

    @pytest.mark.parametrize("steps", [37, 50])
    @pytest.mark.parametrize("return_sequences,training", [(False, False), (True, True)])
    def test_long_and_prime_lengths(self, steps, return_sequences, training):
        # 37 has no divisor to chunk by: it is padded with masked steps (to 48:
        # chunks of 16 forward, 24 backward when compiled). 50: chunks of 10
        # forward, 25 backward when compiled. Only TensorFlow's engine works
        # in chunks; elsewhere 37 steps prove the long length.
        if steps == 50 and BACKEND != "tensorflow":
            pytest.skip("chunk sizes are TensorFlow's engine's; 37 steps cover the length")
        rng = np.random.default_rng(16)
        x = rng.normal(size=(2, steps, 3)).astype("float32")
        weights = random_weights(rng, 3, 4, recurrent_scale=1.0)
        fast, reference = build_pair(
            4, x, weights, return_sequences=return_sequences, return_state=True
        )
        mask = ragged_mask(2, steps)
        h0 = rng.normal(size=(2, 4)).astype("float32")
        for m in (None, mask):
            got_out, got_grad = outputs_and_grads(fast, x, h0, m, training=training)
            want_out, want_grad = outputs_and_grads(reference, x, h0, m, training=training)
            for g, w in zip(got_out + got_grad, want_out + want_grad):
                assert_close_relative(g, w, 1e-5)

    @settings(max_examples=5, deadline=None)
    @given(
        batch=st.integers(1, 3),
        steps=st.integers(1, 37),
        features=st.integers(1, 4),
        units=st.integers(1, 5),
        seed=st.integers(0, 1000),
    )
    def test_any_shape_matches_numpy(self, batch, steps, features, units, seed):
        # Sequence lengths with and without small divisors exercise every chunk size.
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(batch, steps, features)).astype("float32")
        weights = random_weights(rng, features, units)
        layer = gk.layers.IndRNN(units, return_sequences=True)
        layer(x)
        layer.set_weights(weights)
        expected, _ = numpy_ind_rnn(x, *weights)
        assert_close_relative(to_numpy(layer(x)), expected, 1e-5)

    @pytest.mark.tensorflow_only
    @pytest.mark.parametrize("training", [False, True])
    def test_unknown_sequence_length_in_a_tf_function(self, training):
        # A TensorFlow graph traced with `timesteps=None` (the SavedModel
        # signature) runs the loop over packed inputs: values and gradients
        # must not change.
        import tensorflow as tf

        rng = np.random.default_rng(4)
        x = rng.normal(size=(2, 11, 3)).astype("float32")
        mask = ragged_mask(2, 11)
        fast, reference = build_pair(4, x, random_weights(rng, 3, 4), return_sequences=True)
        spec = [tf.TensorSpec((None, None, 3)), tf.TensorSpec((None, None), tf.bool)]

        @tf.function(input_signature=spec)
        def run(inputs, m):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = fast(inputs, mask=m, training=training)
                loss = weighted_loss(outputs)
            return outputs, tape.gradient(loss, fast.trainable_weights + [inputs])

        got, grads = run(x, mask)
        want, want_grads = outputs_and_grads(reference, x, None, mask)
        assert_close_relative(to_numpy(got), want[0], 1e-5)
        for g, w in zip(grads, want_grads):
            assert_close_relative(to_numpy(g), w, 1e-5)

    @pytest.mark.tensorflow_only
    def test_an_eager_tape_after_a_traced_train_step_gets_the_gradients(self):
        # The compiled training engine traced inside a graph (fit's train
        # step) and then called eagerly under a tape raised LookupError ("No
        # gradient defined for operation 'while/XlaDynamicUpdateSlice'"):
        # eager calls have an engine of their own.
        import tensorflow as tf

        rng = np.random.default_rng(5)
        x = rng.normal(size=(2, 7, 3)).astype("float32")
        fast, reference = build_pair(4, x, random_weights(rng, 3, 4), return_sequences=True)

        @tf.function
        def traced(inputs):
            with tf.GradientTape() as tape:
                loss = weighted_loss(fast(inputs, training=True))
            return tape.gradient(loss, fast.trainable_weights)

        traced(x)
        with tf.GradientTape() as tape:
            loss = weighted_loss(fast(x, training=True))
        grads = tape.gradient(loss, fast.trainable_weights)
        _, want_grads = outputs_and_grads(reference, x, None, None)
        for g, w in zip(grads, want_grads):
            assert_close_relative(to_numpy(g), w, 1e-5)

    @pytest.mark.tensorflow_only
    def test_tensorflow_compiles_the_loop_in_training_only(self):
        # Training runs the XLA-compiled engine (the equality tests above run
        # both modes); inference, and so an exported SavedModel, needs no XLA.
        import tensorflow as tf

        layer = gk.layers.IndRNN(3)
        x = np.ones((2, 5, 2), "float32")
        layer(x)
        for training in (True, False):
            call = tf.function(lambda x, training=training: layer(x, training=training))
            graph = call.get_concrete_function(x).graph
            compiled = [n.op for n in graph.as_graph_def().node if n.attr["_XlaMustCompile"].b]
            assert compiled == (["PartitionedCall"] if training else []), (training, compiled)

    @pytest.mark.parametrize("masked", [False, True])
    def test_unknown_sequence_length_in_a_model(self, masked):
        # Models built on keras.Input((None, features)) are called, trained
        # and exported with lengths they have not seen.
        rng = np.random.default_rng(17)
        weights = random_weights(rng, 3, 4)
        models = []
        for layer in (
            gk.layers.IndRNN(4, return_sequences=True),
            keras.layers.RNN(gk.layers.IndRNNCell(4), return_sequences=True),
        ):
            inputs = keras.Input((None, 3))
            hidden = keras.layers.Masking(0.0)(inputs) if masked else inputs
            models.append(keras.Model(inputs, layer(hidden)))
            layer.set_weights(weights)
        for steps in (5, 37):
            x = rng.normal(size=(3, steps, 3)).astype("float32")
            x[0, steps - 2 :] = 0.0
            got = [outputs_and_grads(m, x) for m in models]
            for g, w in zip(got[0][0] + got[0][1], got[1][0] + got[1][1]):
                assert_close_relative(g, w, 1e-5)
            mask = ragged_mask(3, steps) if masked else None
            mask = None if mask is None else np.any(x != 0.0, axis=-1)
            expected, _ = numpy_ind_rnn(x, *weights, mask=mask)
            assert_close_relative(got[0][0][0], expected, 1e-5)

    def test_set_weights_both_ways(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(2, 6, 3)).astype("float32")
        reference = keras.layers.RNN(gk.layers.IndRNNCell(4))
        reference(x)
        fast = gk.layers.IndRNN(4)
        fast(x)
        fast.set_weights(reference.get_weights())
        np.testing.assert_allclose(to_numpy(fast(x)), to_numpy(reference(x)), atol=1e-6)
        reference.set_weights([w * 0.5 for w in fast.get_weights()])
        fast.set_weights(reference.get_weights())
        np.testing.assert_allclose(to_numpy(fast(x)), to_numpy(reference(x)), atol=1e-6)

    def test_stateful_matches_one_long_sequence(self):
        rng = np.random.default_rng(6)
        x = rng.normal(size=(2, 10, 3)).astype("float32")
        weights = random_weights(rng, 3, 4)
        stateful = gk.layers.IndRNN(4, stateful=True, return_sequences=True)
        stateful(x[:, :5])
        stateful.reset_states()
        stateful.set_weights(weights)
        first = to_numpy(stateful(x[:, :5]))
        second = to_numpy(stateful(x[:, 5:]))
        expected, _ = numpy_ind_rnn(x, *weights)
        assert_close_relative(np.concatenate([first, second], axis=1), expected, 1e-5)
        stateful.reset_states()
        assert_close_relative(to_numpy(stateful(x[:, :5])), first, 1e-6)

    def test_cell_stateful_equals_fast_stateful(self):
        rng = np.random.default_rng(15)
        x = rng.normal(size=(2, 8, 3)).astype("float32")
        weights = random_weights(rng, 3, 4)
        fast, reference = build_pair(4, x[:, :4], weights, stateful=True, return_sequences=True)
        fast.reset_states()
        reference.reset_states()
        for half in (x[:, :4], x[:, 4:]):
            assert_close_relative(to_numpy(fast(half)), to_numpy(reference(half)), 1e-5)
        np.testing.assert_allclose(
            to_numpy(fast.states[0]), to_numpy(reference.states[0]), atol=1e-5
        )

    def test_bidirectional(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2, 8, 3)).astype("float32")
        fast = keras.layers.Bidirectional(gk.layers.IndRNN(4, return_sequences=True))
        reference = keras.layers.Bidirectional(
            keras.layers.RNN(gk.layers.IndRNNCell(4), return_sequences=True)
        )
        fast(x)
        reference(x)
        weights = random_weights(rng, 3, 4) + random_weights(rng, 3, 4)
        fast.set_weights(weights)
        reference.set_weights(weights)
        mask = ragged_mask(2, 8)
        assert_close_relative(to_numpy(fast(x, mask=mask)), to_numpy(reference(x, mask=mask)), 1e-5)
        # Bidirectional sets zero_output_for_mask on its layers.
        forward, _ = numpy_ind_rnn(x, *weights[:3], mask=mask, zero_output=True)
        assert_close_relative(to_numpy(fast(x, mask=mask))[..., :4], forward, 1e-5)

    def test_stacked_cells(self):
        rng = np.random.default_rng(8)
        x = rng.normal(size=(2, 6, 3)).astype("float32")
        stacked = keras.layers.RNN(
            keras.layers.StackedRNNCells(
                [gk.layers.IndRNNCell(4), gk.layers.IndRNNCell(5, activation="tanh")]
            ),
            return_sequences=True,
        )
        stacked(x)
        first, second = random_weights(rng, 3, 4), random_weights(rng, 4, 5)
        stacked.set_weights(first + second)
        hidden, _ = numpy_ind_rnn(x, *first)
        expected, _ = numpy_ind_rnn(hidden.astype("float32"), *second, activation="tanh")
        assert_close_relative(to_numpy(stacked(x)), expected, 1e-5)

    def test_masking_layer_in_a_model(self):
        rng = np.random.default_rng(9)
        x = rng.normal(size=(3, 7, 2)).astype("float32")
        x[0, 5:] = 0.0
        inputs = keras.Input((None, 2))
        masked = keras.layers.Masking(0.0)(inputs)
        model = keras.Model(inputs, gk.layers.IndRNN(3)(masked))
        single = to_numpy(model(x[:1, :5]))
        padded = to_numpy(model(x[:1]))
        np.testing.assert_allclose(padded, single, atol=1e-6)


class TestDropout:
    def test_mask_shared_over_time_in_both_paths(self):
        units = 6
        x = np.ones((4, 5, units), "float32")
        weights = [
            np.eye(units, dtype="float32"),
            np.zeros(units, "float32"),
            np.zeros(units, "float32"),
        ]
        for layer in (
            gk.layers.IndRNN(
                units, activation="linear", dropout=0.5, seed=3, return_sequences=True
            ),
            keras.layers.RNN(
                gk.layers.IndRNNCell(units, activation="linear", dropout=0.5, seed=3),
                return_sequences=True,
            ),
        ):
            layer(x)
            layer.set_weights(weights)
            out = to_numpy(layer(x, training=True))
            assert set(np.unique(out)) <= {0.0, 2.0}
            assert 0 < np.count_nonzero(out[:, 0]) < out[:, 0].size
            for t in range(1, 5):
                np.testing.assert_array_equal(out[:, t], out[:, 0])
            np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)


class TestRecurrentBound:
    def test_bound_from_timesteps_and_priority(self):
        assert recurrent_bound(None, None) is None
        assert recurrent_bound(None, 100) == pytest.approx(2 ** (1 / 100))
        assert recurrent_bound(0.9, 100) == 0.9
        assert gk.layers.IndRNNCell(3, timesteps=10).bound == pytest.approx(2**0.1)

    @pytest.mark.parametrize(
        "kwargs,high", [({}, 1.0), ({"timesteps": 5}, 2**0.2), ({"recurrent_max_abs": 0.5}, 0.5)]
    )
    def test_default_recurrent_initializer(self, kwargs, high):
        layer = gk.layers.IndRNN(4000, **kwargs)
        layer(np.zeros((1, 2, 1), "float32"))
        u = to_numpy(layer.cell.recurrent_kernel)
        assert u.min() >= 0.0 and u.max() <= high
        assert u.max() > 0.95 * high and u.min() < 0.05 * high

    def test_projection_after_update_not_clip_in_forward(self):
        bound = 0.5
        layer = gk.layers.IndRNN(
            3, recurrent_max_abs=bound, activation="linear", return_sequences=True
        )
        x = np.ones((2, 4, 1), "float32")
        layer(x)
        over = np.array([0.9, -0.8, 0.2], "float32")
        layer.cell.recurrent_kernel.assign(over)
        # The forward pass uses the weight as it is (no clipping inside).
        kernel, _, bias = layer.get_weights()
        expected, _ = numpy_ind_rnn(x, kernel, over, bias, activation="linear")
        assert_close_relative(to_numpy(layer(x)), expected, 1e-6)
        # And its gradient is not zeroed past the bound.
        u_var = layer.cell.recurrent_kernel
        _, _, (grad_u,) = value_and_gradients(lambda: keras.ops.sum(layer(x)), (), [u_var])
        assert np.all(np.abs(grad_u[:2]) > 0)
        # The optimizer update is followed by the projection.
        optimizer = keras.optimizers.SGD(0.01)
        optimizer.apply([keras.ops.convert_to_tensor(grad_u)], [u_var])
        u = to_numpy(layer.cell.recurrent_kernel)
        np.testing.assert_allclose(u[:2], [0.5, -0.5])
        assert abs(u[2]) < bound

    def test_training_keeps_the_bound(self):
        inputs = keras.Input((6, 2))
        layer = gk.layers.IndRNN(
            4, timesteps=6, recurrent_initializer=keras.initializers.Constant(2 ** (1 / 6))
        )
        model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
        model.compile(keras.optimizers.SGD(1.0), "mse")
        x = np.ones((8, 6, 2), "float32")
        model.fit(x, np.full((8, 1), 100.0, "float32"), epochs=2, verbose=0)
        u = to_numpy(layer.cell.recurrent_kernel)
        assert np.all(np.abs(u) <= 2 ** (1 / 6) + 1e-6)


class TestErrors:
    @pytest.mark.parametrize(
        "kwargs,error,pattern",
        [
            ({"units": 0}, ValueError, "units=0"),
            ({"units": -3}, ValueError, "units=-3"),
            ({"units": 2.5}, TypeError, "units=2.5"),
            ({"units": 4, "recurrent_max_abs": -1.0}, ValueError, "recurrent_max_abs=-1.0"),
            ({"units": 4, "recurrent_max_abs": 0.0}, ValueError, "recurrent_max_abs=0.0"),
            ({"units": 4, "timesteps": 0}, ValueError, "timesteps=0"),
            ({"units": 4, "timesteps": 1.5}, TypeError, "timesteps=1.5"),
            ({"units": 4, "dropout": 1.0}, ValueError, "dropout=1.0"),
            ({"units": 4, "dropout": -0.1}, ValueError, "dropout=-0.1"),
            ({"units": 4, "grad_clipping": 0.0}, ValueError, "grad_clipping=0.0"),
            ({"units": 4, "grad_clipping": -1}, ValueError, "grad_clipping=-1"),
            ({"units": 4, "grad_clipping": "10"}, TypeError, "grad_clipping='10'"),
            ({"units": 4, "use_kernel": "no"}, TypeError, "use_kernel='no'"),
            (
                {"units": 4, "use_kernel": False, "kernel_regularizer": "l2"},
                ValueError,
                "kernel_regularizer='l2'",
            ),
            (
                {"units": 4, "use_kernel": False, "kernel_initializer": "ones"},
                ValueError,
                "kernel_initializer='ones'",
            ),
        ],
    )
    @pytest.mark.parametrize("cls", [gk.layers.IndRNNCell, gk.layers.IndRNN])
    def test_bad_arguments(self, cls, kwargs, error, pattern):
        with pytest.raises(error, match=re.escape(pattern)):
            cls(**kwargs)

    def test_input_not_rank_3(self):
        with pytest.raises(ValueError, match=r"rank 3.*\(4, 5\)"):
            gk.layers.IndRNN(3)(np.zeros((4, 5), "float32"))

    def test_unknown_feature_dimension(self):
        with pytest.raises(ValueError, match="feature dimension"):
            gk.layers.IndRNNCell(3).build((None, None))

    def test_recurrence_alone_needs_the_width_of_units(self):
        with pytest.raises(ValueError, match=r"input width=5.*units=3.*Dense\(3\)"):
            gk.layers.IndRNN(3, use_kernel=False)(np.zeros((2, 4, 5), "float32"))

    def test_unroll_is_rejected(self):
        with pytest.raises(ValueError, match="unroll"):
            gk.layers.IndRNN(3, unroll=True)

    def test_max_abs_constraint_arguments(self):
        with pytest.raises(ValueError, match="max_value=-1"):
            gk.constraints.MaxAbs(-1)
        with pytest.raises(TypeError, match="max_value='a'"):
            gk.constraints.MaxAbs("a")


class TestSerialization:
    def test_layer_test_fast_layer(self, tmp_path):
        x = np.random.default_rng(10).normal(size=(3, 6, 4)).astype("float32")
        run_layer_test(
            gk.layers.IndRNN,
            {
                "units": 5,
                "timesteps": 6,
                "dropout": 0.1,
                "seed": 1,
                "kernel_regularizer": "l2",
                "return_sequences": True,
            },
            x,
            expected_output_shape=(3, 6, 5),
            expected_num_trainable_weights=3,
            tmp_path=tmp_path,
        )

    def test_cell_config_and_keras_file(self, tmp_path):
        cell = gk.layers.IndRNNCell(
            5,
            activation="tanh",
            recurrent_initializer=keras.initializers.RandomUniform(0.5, 1.0),
            recurrent_max_abs=1.0,
            dropout=0.2,
            seed=4,
            bias_constraint="non_neg",
        )
        restored = assert_config_round_trip(cell)
        assert restored.recurrent_max_abs == 1.0 and restored.dropout == 0.2
        x = np.random.default_rng(11).normal(size=(2, 5, 3)).astype("float32")
        inputs = keras.Input((None, 3))
        model = keras.Model(inputs, keras.layers.RNN(cell)(inputs))
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        loaded_cell = loaded.layers[-1].cell
        assert isinstance(loaded_cell, gk.layers.IndRNNCell)
        assert isinstance(loaded_cell.recurrent_kernel.constraint, gk.constraints.MaxAbs)

    def test_flat_config_is_complete(self):
        signature = inspect.signature(gk.layers.IndRNN.__init__)
        layer = gk.layers.IndRNN(3, timesteps=7, seed=5, dropout=0.3, go_backwards=True)
        config = layer.get_config()
        for name in signature.parameters:
            if name not in ("self", "kwargs"):
                assert name in config, name
        assert "cell" not in config
        restored = gk.layers.IndRNN.from_config(config)
        assert restored.cell.seed == 5 and restored.cell.timesteps == 7 and restored.go_backwards

    def test_recurrence_alone_and_grad_clipping_in_the_keras_file(self, tmp_path):
        x = np.random.default_rng(12).normal(size=(2, 5, 3)).astype("float32")
        inputs = keras.Input((None, 3))
        layer = gk.layers.IndRNN(3, use_kernel=False, grad_clipping=10, return_sequences=True)
        model = keras.Model(inputs, layer(inputs))
        assert [w.path.split("/")[-1] for w in layer.weights] == ["recurrent_kernel", "bias"]
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        cell = loaded.layers[-1].cell
        assert cell.use_kernel is False and cell.kernel is None and cell.grad_clipping == 10.0
        restored = gk.layers.IndRNN.from_config(layer.get_config())
        assert restored.cell.kernel_initializer is None and restored.cell.grad_clipping == 10.0

    def test_registered_names(self):
        assert keras.saving.get_registered_name(gk.layers.IndRNN) == "keras_gradkit>IndRNN"
        assert keras.saving.get_registered_name(gk.layers.IndRNNCell) == "keras_gradkit>IndRNNCell"
        assert keras.saving.get_registered_name(gk.constraints.MaxAbs) == "keras_gradkit>MaxAbs"

    @pytest.mark.skipif(
        BACKEND == "torch", reason="Keras exports SavedModels from TensorFlow and JAX only"
    )
    def test_export_serves_without_package(self, tmp_path):
        rng = np.random.default_rng(12)
        inputs = keras.Input((None, 3))
        x = keras.layers.Masking(0.0)(inputs)
        x = gk.layers.IndRNN(6, timesteps=20, return_sequences=True)(x)
        x = keras.layers.Bidirectional(
            keras.layers.RNN(gk.layers.IndRNNCell(4), return_sequences=True)
        )(x)
        x = gk.layers.IndRNN(5, activation="tanh", go_backwards=True)(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        data = rng.normal(size=(4, 9, 3)).astype("float32")
        data[1, 6:] = 0.0
        assert_export_serves(model, data, tmp_path)


class TestTraining:
    def test_mixed_precision_close_to_float32(self):
        rng = np.random.default_rng(13)
        x = rng.normal(size=(2, 10, 3)).astype("float32")
        weights = random_weights(rng, 3, 4, recurrent_scale=0.9)
        full = gk.layers.IndRNN(4, return_sequences=True)
        half = gk.layers.IndRNN(4, return_sequences=True, dtype="mixed_float16")
        full(x)
        half(x)
        full.set_weights(weights)
        half.set_weights(weights)
        for training in (False, True):  # TensorFlow compiles its loops in training
            out = half(x, training=training)
            assert keras.backend.standardize_dtype(out.dtype) == "float16"
            np.testing.assert_allclose(
                to_numpy(out).astype("float32"), to_numpy(full(x)), atol=2e-2, rtol=2e-2
            )
            _, _, grads = value_and_gradients(
                lambda: keras.ops.sum(keras.ops.cast(half(x, training=training), "float32")),  # noqa: B023  (called at once, in this iteration)
                (),
                half.trainable_weights,
            )
            assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in grads)
        assert all(
            keras.backend.standardize_dtype(w.dtype) == "float32" for w in half.trainable_weights
        )

    @pytest.mark.parametrize(
        "go_backwards,masked,return_sequences",
        [(False, False, False), (False, True, True), (True, True, False), (True, False, True)],
    )
    def test_one_sgd_step_equals_cell(self, go_backwards, masked, return_sequences):
        # Same weights in, same loss and weights out of one SGD step, with an
        # initial state from a second input and an unknown length (37 steps:
        # more than one block of the PyTorch engine).
        rng = np.random.default_rng(18)
        x = rng.normal(size=(4, 37, 3)).astype("float32")
        x[0, 10:] = 0.0
        x[1, :2] = 0.0
        h0 = rng.normal(size=(4, 5)).astype("float32")
        weights = random_weights(rng, 3, 5, recurrent_scale=0.9)
        y = rng.normal(size=(4, 37, 5) if return_sequences else (4, 5)).astype("float32")
        kwargs = dict(return_sequences=return_sequences, go_backwards=go_backwards)
        results = []
        for layer in (
            gk.layers.IndRNN(5, **kwargs),
            keras.layers.RNN(gk.layers.IndRNNCell(5), **kwargs),
        ):
            inputs, state = keras.Input((None, 3)), keras.Input((5,))
            hidden = keras.layers.Masking(0.0)(inputs) if masked else inputs
            model = keras.Model([inputs, state], layer(hidden, initial_state=[state]))
            layer.set_weights(weights)
            model.compile(keras.optimizers.SGD(0.1), "mse")
            loss = model.train_on_batch([x, h0], y)
            results.append((float(np.asarray(loss).ravel()[0]), layer.get_weights()))
        mask = np.any(x != 0.0, axis=-1) if masked else None
        expected, _ = numpy_ind_rnn(x, *weights, h0=h0, mask=mask, go_backwards=go_backwards)
        expected = expected if return_sequences else expected[:, -1]
        if not masked:
            # With a mask, Keras leaves masked steps out of the loss; the
            # masked values are checked against NumPy in the other tests.
            assert results[0][0] == pytest.approx(np.mean((expected - y) ** 2), rel=1e-4)
        assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
        for got, want, before in zip(results[0][1], results[1][1], weights):
            assert np.max(np.abs(want - before)) > 1e-4
            assert_close_relative(got, want, 1e-5)

    @pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
    def test_gradients_match_numpy_finite_differences(self, activation):
        # The gradients against the NumPy equation itself, differentiated by
        # central differences in float64.
        rng = np.random.default_rng(19)
        x = rng.normal(size=(3, 7, 2)).astype("float32")
        h0 = rng.normal(size=(3, 3)).astype("float32")
        weights = random_weights(rng, 2, 3, recurrent_scale=0.9)
        mask = ragged_mask(3, 7)
        layer = gk.layers.IndRNN(3, activation=activation, return_sequences=True, go_backwards=True)
        layer(x)
        layer.set_weights(weights)
        grads_by_mode = [
            outputs_and_grads(layer, x, h0, mask, training=t)[1] for t in (False, True)
        ]
        scale = np.linspace(0.5, 1.5, 3)

        def numpy_loss(kernel, u, bias):
            out, _ = numpy_ind_rnn(
                x.astype("float64"), kernel, u, bias, h0, activation, mask, go_backwards=True
            )
            return np.sum(out * scale) + np.sum(out**2)

        for index, weight in enumerate(weights):
            numeric = np.zeros(weight.shape)
            for position in np.ndindex(weight.shape):
                shifted = [w.astype("float64") for w in weights]
                shifted[index][position] += 1e-6
                plus = numpy_loss(*shifted)
                shifted[index][position] -= 2e-6
                numeric[position] = (plus - numpy_loss(*shifted)) / 2e-6
            for grads in grads_by_mode:
                assert_close_relative(grads[index], numeric, 1e-4)

    @pytest.mark.parametrize("jit_compile", [False, True])
    def test_fit_matches_cell_model(self, jit_compile):
        if jit_compile and BACKEND == "torch":
            pytest.skip("torch.compile of Keras's Python loop over steps takes minutes")
        rng = np.random.default_rng(14)
        x = rng.uniform(size=(16, 8, 2)).astype("float32")
        y = x.sum(axis=(1, 2))[:, None] / 8.0
        models = []
        for make in (
            lambda: gk.layers.IndRNN(4),
            lambda: keras.layers.RNN(gk.layers.IndRNNCell(4)),
        ):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 2))
            model = keras.Model(inputs, keras.layers.Dense(1)(make()(inputs)))
            model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=jit_compile)
            models.append(model)
        models[1].set_weights(models[0].get_weights())
        losses = [
            m.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history["loss"]
            for m in models
        ]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
        for a, b in zip(models[0].get_weights(), models[1].get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_docstring_args_exist_in_signature():
    for cls in (gk.layers.IndRNNCell, gk.layers.IndRNN, gk.constraints.MaxAbs):
        doc = cls.__doc__
        args_section = doc.split("Args:")[1].split("Call arguments:")[0].split("Example:")[0]
        documented = re.findall(r"^\s{8}(\w+(?:, \w+)*)(?:,)?:", args_section, flags=re.M)
        names = [n.strip() for group in documented for n in group.split(",")]
        parameters = inspect.signature(cls.__init__).parameters
        assert names, cls
        for name in names:
            assert name in parameters, (cls.__name__, name)


SLOPES = {
    "relu": lambda z: (z > 0).astype("float64"),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "elu": lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0))),
}


def numpy_clipped_bptt(x, weights, h0, activation, clip, mask=None, last_only=False):
    """Outputs and gradients of `weighted_loss` for the recurrence with
    Lasagne's `grad_clipping`, backpropagation through time written out from
    its definition: the gradient w.r.t. each step's pre-activation,
    `clip(g_t * act'(pre_t))`, is what reaches the weights and the step
    before. Masked steps keep the state (their output is zero, Keras's
    `zero_output_for_mask`). Returns the outputs, the gradients w.r.t.
    `weights`, `x` and `h0`, the fraction of pre-activation gradients the
    clip changed, and the gradients had only the final ones been clipped."""
    kernel, u, bias = weights if len(weights) == 3 else (None,) + tuple(weights)
    x = x.astype("float64")
    batch, steps, _ = x.shape
    keep = np.ones((batch, steps, 1), bool) if mask is None else mask[..., None]
    projected = x if kernel is None else x @ kernel
    h, states, pres = h0.astype("float64"), [h0.astype("float64")], []
    for t in range(steps):
        pres.append(projected[:, t] + u * h + bias)
        h = np.where(keep[:, t], ACTIVATIONS[activation](pres[-1]), h)
        states.append(h)
    outputs = np.stack(states[1:], axis=1) * keep
    scale = np.linspace(0.5, 1.5, u.shape[0])
    if last_only:
        direct = np.zeros_like(outputs)
        direct[:, -1] = scale + 2 * states[-1]
        outputs = states[-1]
    else:
        direct = (scale + 2 * outputs) * keep

    def backward(limit):
        carry, dpre, changed = np.zeros_like(h), np.zeros_like(direct), []
        for t in reversed(range(steps)):
            g = direct[:, t] + carry
            raw = g * SLOPES[activation](pres[t])
            d = raw if limit is None else np.clip(raw, -limit, limit)
            changed.append((d != raw)[keep[:, t, 0]])
            dpre[:, t] = np.where(keep[:, t], d, 0.0)
            carry = np.where(keep[:, t], dpre[:, t] * u, g)
        previous = np.stack(states[:-1], axis=1)
        grads = [] if kernel is None else [np.einsum("btf,btu->fu", x, dpre)]
        grads += [np.sum(dpre * previous, axis=(0, 1)), np.sum(dpre, axis=(0, 1))]
        dx = dpre if kernel is None else dpre @ kernel.T
        return grads + [dx, carry], np.concatenate(changed).mean()

    grads, fraction = backward(clip)
    unclipped, _ = backward(None)
    final_only = [np.clip(g, -clip, clip) for g in unclipped]
    return outputs, grads, fraction, final_only


class TestGradClipping:
    # (layer, activation, use_kernel, masked, last_only, steps, training):
    # every engine (TensorFlow's compiled one in training and its chunked one
    # otherwise, padded for a prime length; JAX's scan; PyTorch's autograd
    # function; the scanned fallback for an activation without a written
    # derivative) and keras.layers.RNN over the cell.
    CASES = {
        "fast_relu_masked_inference": ("fast", "relu", True, True, False, 9, False),
        "fast_relu_masked_training": ("fast", "relu", True, True, False, 9, True),
        "fast_tanh_recurrence_only_prime_length": ("fast", "tanh", False, False, True, 37, False),
        "fast_tanh_recurrence_only_training": ("fast", "tanh", False, False, True, 37, True),
        "fast_elu_scanned_fallback": ("fast", "elu", True, True, False, 9, True),
        "cell_in_keras_rnn": ("cell", "relu", True, True, False, 9, True),
    }

    @pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
    def test_matches_numpy_backpropagation_with_the_clip(self, case):
        kind, activation, use_kernel, masked, last_only, steps, training = self.CASES[case]
        rng = np.random.default_rng(23)
        units = 3
        features = 2 if use_kernel else units
        x = rng.normal(size=(3, steps, features)).astype("float32")
        h0 = rng.normal(size=(3, units)).astype("float32")
        weights = random_weights(rng, features, units, recurrent_scale=1.0)
        weights[1] = np.array([0.95, -0.9, 0.8], "float32")
        if not use_kernel:
            weights = weights[1:]
        mask = ragged_mask(3, steps) if masked else None
        clip = 0.5 if last_only else 1.5  # binds at some steps, not at others
        options = dict(
            activation=activation,
            use_kernel=use_kernel,
            grad_clipping=clip,
            return_sequences=not last_only,
        )
        if kind == "fast":
            layer = gk.layers.IndRNN(units, zero_output_for_mask=True, **options)
        else:
            return_sequences = options.pop("return_sequences")
            cell = gk.layers.IndRNNCell(units, **options)
            layer = keras.layers.RNN(
                cell, return_sequences=return_sequences, zero_output_for_mask=True
            )
        layer(x)
        layer.set_weights(weights)
        outputs, grads = outputs_and_grads(layer, x, h0, mask, training=training)
        expected, expected_grads, fraction, final_only = numpy_clipped_bptt(
            x, weights, h0, activation, clip, mask, last_only
        )
        # The clip binds at some steps and not at others, and clipping only
        # the final gradients would give another answer.
        assert 0 < fraction < 0.95, fraction
        assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(final_only, expected_grads))
        assert_close_relative(outputs[0], expected, 1e-5)
        assert len(grads) == len(expected_grads)
        for got, want in zip(grads, expected_grads):
            assert_close_relative(to_numpy(got), want, 1e-5)

    def test_without_the_clip_nothing_changes(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(2, 6, 2)).astype("float32")
        weights = random_weights(rng, 2, 3)
        results = []
        for clip in (None, 1e6):
            layer = gk.layers.IndRNN(3, grad_clipping=clip, return_sequences=True)
            layer(x)
            layer.set_weights(weights)
            results.append(outputs_and_grads(layer, x, training=True))
        for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)
