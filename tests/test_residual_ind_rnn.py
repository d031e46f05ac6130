"""ResidualIndRNN against a NumPy implementation of its equation, plus the
block's invariants (zero weights, depth, padding) and serialization."""

import inspect
import pathlib

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

EPSILON = 1e-3
DATA = pathlib.Path(__file__).parent / "data"


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --- NumPy reference, written from the equation ---------------------------------


def np_batch_norm(x, weights, mask, training):
    gamma, beta, moving_mean, moving_variance = weights
    if training:
        m = mask[..., None].astype("float64")
        count = m.sum()
        mean = (x * m).sum(axis=(0, 1)) / count
        variance = (((x - mean) * m) ** 2).sum(axis=(0, 1)) / count
    else:
        mean, variance = moving_mean, moving_variance
    return gamma * (x - mean) / np.sqrt(variance + EPSILON) + beta


def np_ind_rnn(x, weights, mask, activation):
    """`h_t = act(x_t + u * h_{t-1})` (the official recurrence, weights `[u]`),
    or `act(x_t @ kernel + u * h_{t-1} + bias)` for the four-matrix block's."""
    kernel, u, bias = weights if len(weights) == 3 else (None, weights[0], 0.0)
    projected = x if kernel is None else x @ kernel + bias
    h = np.zeros((x.shape[0], u.shape[0]))
    outputs = np.zeros(x.shape[:2] + (u.shape[0],))
    for t in range(x.shape[1]):
        new = activation(projected[:, t] + u * h)
        h = np.where(mask[:, t, None], new, h)  # masked steps keep the state
        outputs[:, t] = h
    return outputs


def np_block(x, weights, mask, training, batch_norm="after", activation=lambda z: np.maximum(z, 0)):
    """y = x + W_2 BN_2(R_2(W_1 BN_1(R_1(x)))) (batch_norm="after"), or with
    each BN before its recurrence R; F zero at masked steps."""
    r = x.astype("float64")
    for i in range(2):
        if batch_norm == "before":
            r = np_batch_norm(r, weights["batch_norm"][i], mask, training)
        r = np_ind_rnn(r, weights["ind_rnn"][i], mask, activation)
        if batch_norm == "after":
            r = np_batch_norm(r, weights["batch_norm"][i], mask, training)
        kernel, bias = weights["weight"][i]
        r = r @ kernel + bias
    return x + np.where(mask[..., None], r, 0.0)


def random_block_weights(rng, units):
    """Non-symmetric weights: a transposed kernel or a swapped half would show."""

    def normal(*shape, scale=0.5):
        return (scale * rng.normal(size=shape)).astype("float32")

    return {
        "batch_norm": [
            [
                1 + normal(units, scale=0.2),
                normal(units, scale=0.2),
                normal(units, scale=0.3),
                rng.uniform(0.5, 2.0, size=units).astype("float32"),
            ]
            for _ in range(2)
        ],
        "ind_rnn": [[rng.uniform(-0.9, 0.9, size=units).astype("float32")] for _ in range(2)],
        "weight": [[normal(units, units), normal(units, scale=0.1)] for _ in range(2)],
    }


def set_block_weights(layer, weights):
    for i in range(2):
        if layer.batch_norms:
            layer.batch_norms[i].set_weights(weights["batch_norm"][i])
        layer.recurrences[i].set_weights(weights["ind_rnn"][i])
        layer.weight_layers[i].set_weights(weights["weight"][i])


def sequences(rng, batch=3, steps=7, units=4, lengths=(7, 5, 2)):
    x = rng.normal(size=(batch, steps, units)).astype("float32")
    mask = np.arange(steps)[None, :] < np.array(lengths)[:, None]
    return x, mask


def build_block(units, x, **kwargs):
    layer = gk.layers.ResidualIndRNN(units, epsilon=EPSILON, **kwargs)
    layer.build(x.shape)
    return layer


class TestEquation:
    @pytest.mark.parametrize("batch_norm", ["before", "after", None])
    @pytest.mark.parametrize("training", [False, True])
    def test_matches_numpy(self, batch_norm, training):
        rng = np.random.default_rng(1)
        x, mask = sequences(rng)
        weights = random_block_weights(rng, 4)
        layer = build_block(4, x, batch_norm=batch_norm)
        set_block_weights(layer, weights)
        got = _np(layer(x, mask=keras.ops.convert_to_tensor(mask), training=training))
        expected = np_block(x, weights, mask, training, batch_norm)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

    def test_tanh_without_mask(self):
        rng = np.random.default_rng(2)
        x, _ = sequences(rng)
        weights = random_block_weights(rng, 4)
        layer = build_block(4, x, activation="tanh")
        set_block_weights(layer, weights)
        got = _np(layer(x, training=True))
        expected = np_block(x, weights, np.ones(x.shape[:2], bool), True, activation=np.tanh)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

    def test_moving_statistics_use_unmasked_steps(self):
        rng = np.random.default_rng(3)
        x, mask = sequences(rng)
        layer = build_block(4, x, momentum=0.5, batch_norm="before")
        layer(x, mask=keras.ops.convert_to_tensor(mask), training=True)
        real = x[mask]
        moving_mean, moving_variance = (_np(v) for v in layer.batch_norms[0].non_trainable_weights)
        np.testing.assert_allclose(moving_mean, 0.5 * real.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(moving_variance, 0.5 + 0.5 * real.var(axis=0), atol=1e-5)

    @pytest.mark.parametrize("training", [False, True])
    def test_zero_weights_give_the_identity(self, training):
        rng = np.random.default_rng(4)
        x, mask = sequences(rng)
        layer = build_block(4, x)
        layer.set_weights([np.zeros(w.shape, "float32") for w in layer.weights])
        for m in (None, keras.ops.convert_to_tensor(mask)):
            np.testing.assert_array_equal(_np(layer(x, mask=m, training=training)), x)

    def test_masked_steps_pass_through(self):
        rng = np.random.default_rng(5)
        x, mask = sequences(rng)
        layer = build_block(4, x)
        y = _np(layer(x, mask=keras.ops.convert_to_tensor(mask), training=True))
        np.testing.assert_array_equal(y[~mask], x[~mask])
        assert np.abs(y[mask] - x[mask]).max() > 1e-2

    def test_dropout_mask_is_shared_over_time(self):
        # Linear recurrences with u = 0 and identity weights:
        # F(x) = D_2(D_1(x)), so F / x shows the dropout masks step by step.
        units, eye, zeros = 6, np.eye(6, dtype="float32"), np.zeros(6, "float32")
        x = np.ones((4, 5, units), "float32")
        layer = build_block(units, x, activation="linear", batch_norm=None, dropout=0.5, seed=3)
        set_block_weights(layer, {"ind_rnn": [[zeros]] * 2, "weight": [[eye, zeros]] * 2})
        np.testing.assert_allclose(_np(layer(x, training=False)), 2 * x)
        kept = _np(layer(x, training=True)) - x
        np.testing.assert_allclose(kept, np.broadcast_to(kept[:, :1], kept.shape))
        assert set(np.unique(np.round(kept, 4))) <= {0.0, 2.0, 4.0}
        assert 0 < np.mean(kept == 0) < 1


class TestOfficialLayout:
    def test_two_matrices_and_the_papers_parameter_count(self):
        # Per block at 8 units: two (8, 8) weights with biases, two recurrent
        # vectors, two batch normalizations: 2 * (64 + 8) + 2 * 8 + 2 * 16.
        layer = build_block(8, np.zeros((2, 5, 8), "float32"))
        matrices = [w for w in layer.trainable_weights if len(w.shape) == 2]
        assert [tuple(w.shape) for w in matrices] == [(8, 8), (8, 8)]
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 192
        assert all(r.cell.kernel is None and r.cell.bias is None for r in layer.recurrences)

    @pytest.mark.parametrize("seed", [None, 5])
    def test_the_two_weights_start_different(self, seed):
        # One initializer instance draws the same values at each call: the
        # block must not hand the same one to both weights (or recurrences).
        x = np.zeros((2, 5, 4), "float32")
        initializers = dict(
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            recurrent_initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=seed),
        )
        blocks = [build_block(4, x, **initializers) for _ in range(2)]
        for block in blocks:
            w1, w2 = (_np(d.kernel) for d in block.weight_layers)
            u1, u2 = (_np(r.cell.recurrent_kernel) for r in block.recurrences)
            assert not np.allclose(w1, w2) and not np.allclose(u1, u2)
        if seed is not None:  # and a seeded block is reproducible
            for a, b in zip(blocks[0].weights, blocks[1].weights):
                np.testing.assert_array_equal(_np(a), _np(b))
        default = build_block(4, x)
        w1, w2 = (_np(d.kernel) for d in default.weight_layers)
        assert not np.allclose(w1, w2)

    def test_default_is_batch_norm_after(self):
        assert gk.layers.ResidualIndRNN(4).batch_norm == "after"

    @pytest.mark.parametrize("training", [False, True])
    def test_a_file_of_the_four_matrix_block_loads_as_it_was_saved(self, training, tmp_path):
        # Saved by keras_gradkit before the official layout (batch_norm
        # "before", dropout 0.1, random weights); its config has no
        # `_input_kernels` key.
        path = DATA / "residual_ind_rnn_four_matrices.keras"
        model = keras.saving.load_model(path)
        block = model.get_layer("block")
        assert block._input_kernels and block.batch_norm == "before"
        matrices = [w for w in block.trainable_weights if len(w.shape) == 2]
        assert len(matrices) == 4
        x, mask = sequences(np.random.default_rng(13), steps=5, lengths=(5, 5, 5))
        weights = {
            "batch_norm": [[_np(w) for w in bn.weights] for bn in block.batch_norms],
            "ind_rnn": [[_np(w) for w in r.weights] for r in block.recurrences],
            "weight": [[_np(w) for w in d.weights] for d in block.weight_layers],
        }
        if training:
            block.dropout = 0.0
            for dropout in block.dropouts:
                dropout.rate = 0.0
        got = _np(block(x, training=training))
        expected = np_block(x, weights, mask, training, batch_norm="before")
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
        resaved = tmp_path / "again.keras"
        model.save(resaved)
        assert keras.saving.load_model(resaved).get_layer("block")._input_kernels

    def test_float64_end_to_end(self):
        # u = 0, linear, identity weights: F(x) = D_2(D_1(x)), each kept value
        # x * 2 or x * 4 exactly in float64; float32 anywhere would round the
        # 1e-10 offsets away.
        if keras.backend.standardize_dtype(keras.ops.zeros((), "float64").dtype) != "float64":
            pytest.skip("JAX computes float64 as float32 unless jax_enable_x64 is set")
        units = 4
        x = 1.0 + 1e-10 * np.arange(2 * 3 * units, dtype="float64").reshape(2, 3, units)
        layer = gk.layers.ResidualIndRNN(
            units, activation="linear", batch_norm=None, dropout=0.5, seed=2, dtype="float64"
        )
        layer.build(x.shape)
        eye, zeros = np.eye(units), np.zeros(units)
        set_block_weights(layer, {"ind_rnn": [[zeros]] * 2, "weight": [[eye, zeros]] * 2})
        out = layer(x, training=True)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        assert all(d.compute_dtype == "float64" for d in layer.dropouts)
        ratio = (_np(out) - x) / x
        np.testing.assert_allclose(ratio, np.round(ratio), atol=1e-13)
        assert set(np.unique(np.round(ratio))) <= {0.0, 2.0, 4.0}

    def test_float32_block_under_a_global_mixed_policy_stays_finite(self):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            layer = gk.layers.ResidualIndRNN(
                4, dtype="float32", batch_norm=None, kernel_initializer="ones"
            )
            out = _np(layer(np.full((2, 3, 4), 3e4, "float32"), training=True))
        finally:
            keras.config.set_dtype_policy(previous)
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        assert out.max() > 65504


class TestMasking:
    @pytest.mark.parametrize(
        "training, batch_norm", [(False, "before"), (True, "before"), (True, "after")]
    )
    def test_more_padding_changes_nothing(self, training, batch_norm):
        rng = np.random.default_rng(6)
        x, mask = sequences(rng)
        garbage = 10 * rng.normal(size=(3, 5, 4)).astype("float32")
        x_long = np.concatenate([x, garbage], axis=1)
        mask_long = np.concatenate([mask, np.zeros((3, 5), bool)], axis=1)
        weights = random_block_weights(rng, 4)
        layers = [build_block(4, x, batch_norm=batch_norm) for _ in range(2)]
        for layer in layers:
            set_block_weights(layer, weights)
        short = _np(layers[0](x, mask=keras.ops.convert_to_tensor(mask), training=training))
        long = _np(
            layers[1](x_long, mask=keras.ops.convert_to_tensor(mask_long), training=training)
        )
        np.testing.assert_allclose(long[:, :7][mask], short[mask], atol=1e-5, rtol=1e-5)
        for a, b in zip(layers[0].non_trainable_weights, layers[1].non_trainable_weights):
            np.testing.assert_allclose(_np(a), _np(b), atol=1e-6)

    def test_mask_passes_on_in_a_model(self):
        rng = np.random.default_rng(7)
        x, mask = sequences(rng)
        x[~mask] = 0.0
        inputs = keras.Input((None, 4))
        h = keras.layers.Masking(0.0)(inputs)
        h = gk.layers.ResidualIndRNN(4, batch_norm="before")(h)
        h = gk.layers.ResidualIndRNN(4)(h)
        model = keras.Model(inputs, gk.layers.IndRNN(3)(h))  # last state: needs the mask
        padded = np.concatenate([x, np.zeros((3, 4, 4), "float32")], axis=1)
        np.testing.assert_allclose(_np(model(padded)), _np(model(x)), atol=1e-5)
        layer = model.layers[2]
        assert layer.compute_mask(x, keras.ops.convert_to_tensor(mask)) is not None


class TestDepth:
    def test_gradient_reaches_the_first_of_24_blocks(self):
        units, rng = 8, np.random.default_rng(8)
        x = rng.normal(size=(8, 6, units)).astype("float32")
        probe = keras.ops.convert_to_tensor(rng.normal(size=(8, 6, units)).astype("float32"))
        blocks = [gk.layers.ResidualIndRNN(units, timesteps=6) for _ in range(24)]
        for block in blocks:
            block.build(x.shape)

        def loss(inputs):
            h = inputs
            for block in blocks:
                h = block(h, training=True)
            return keras.ops.mean(h * probe)

        def kernels(block):
            return [w for w in block.trainable_weights if w.path.endswith("/kernel")]

        watched = kernels(blocks[0]) + kernels(blocks[-1])
        assert len(watched) == 4
        _, _, grads = value_and_gradients(loss, [x], watched)
        first = np.sqrt(sum(np.sum(g**2) for g in grads[:2]))
        last = np.sqrt(sum(np.sum(g**2) for g in grads[2:]))
        assert np.isfinite(first) and last > 0
        assert 1 / 100 < first / last < 100, (first, last)


class TestErrors:
    def test_width_mismatch(self):
        layer = gk.layers.ResidualIndRNN(4)
        with pytest.raises(ValueError, match=r"input width=5.*units=4"):
            layer(np.zeros((2, 3, 5), "float32"))

    def test_rank(self):
        with pytest.raises(ValueError, match="rank 3"):
            gk.layers.ResidualIndRNN(4)(np.zeros((2, 4), "float32"))

    @pytest.mark.parametrize(
        "kwargs, error, pattern",
        [
            ({"dropout": 1.0}, ValueError, "dropout"),
            ({"dropout": "a"}, TypeError, "dropout"),
            ({"batch_norm": "middle"}, ValueError, "batch_norm"),
            ({"recurrent_max_abs": -1.0}, ValueError, "recurrent_max_abs"),
        ],
    )
    @pytest.mark.backend_free
    def test_bad_arguments(self, kwargs, error, pattern):
        with pytest.raises(error, match=pattern):
            gk.layers.ResidualIndRNN(4, **kwargs)


class TestSerialization:
    def test_layer_test(self, tmp_path):
        x = np.random.default_rng(9).normal(size=(3, 6, 4)).astype("float32")
        run_layer_test(
            gk.layers.ResidualIndRNN,
            {
                "units": 4,
                "timesteps": 6,
                "dropout": 0.1,
                "seed": 1,
                "kernel_regularizer": "l2",
                "batch_norm": "after",
            },
            x,
            expected_output_shape=(3, 6, 4),
            expected_num_trainable_weights=10,
            expected_num_non_trainable_weights=4,
            tmp_path=tmp_path,
        )

    def test_config_is_complete(self):
        layer = gk.layers.ResidualIndRNN(
            3,
            activation="tanh",
            recurrent_initializer=keras.initializers.RandomUniform(0.5, 1.0),
            recurrent_max_abs=1.0,
            dropout=0.2,
            seed=4,
            batch_norm=None,
            momentum=0.9,
            epsilon=1e-4,
            grad_clipping=10.0,
        )
        config = layer.get_config()
        for name in inspect.signature(gk.layers.ResidualIndRNN.__init__).parameters:
            if name not in ("self", "kwargs"):
                assert name in config, name
        restored = assert_config_round_trip(layer)
        assert restored.batch_norm is None and restored.seed == 4 and restored.epsilon == 1e-4
        assert restored.grad_clipping == 10.0
        assert not restored.batch_norms
        assert config["_input_kernels"] is False and not restored._input_kernels
        assert (
            keras.saving.get_registered_name(gk.layers.ResidualIndRNN)
            == "keras_gradkit>ResidualIndRNN"
        )

    def test_keras_file_keeps_moving_statistics(self, tmp_path):
        rng = np.random.default_rng(10)
        x, mask = sequences(rng)
        x[~mask] = 0.0
        inputs = keras.Input((None, 4))
        h = keras.layers.Masking(0.0)(inputs)
        model = keras.Model(inputs, gk.layers.ResidualIndRNN(4, recurrent_max_abs=1.0)(h))
        model.compile("adam", "mse")
        model.fit(x, rng.normal(size=x.shape).astype("float32"), epochs=1, verbose=0)
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        for a, b in zip(model.non_trainable_weights, loaded.non_trainable_weights):
            np.testing.assert_array_equal(_np(a), _np(b))
        assert not np.allclose(_np(model.non_trainable_weights[0]), 0.0)

    @pytest.mark.tensorflow_only
    def test_export_serves_without_package(self, tmp_path):
        rng = np.random.default_rng(11)
        x, mask = sequences(rng)
        x[~mask] = 0.0
        inputs = keras.Input((None, 4))
        h = keras.layers.Masking(0.0)(inputs)
        h = gk.layers.ResidualIndRNN(4, timesteps=7, batch_norm="after")(h)
        model = keras.Model(inputs, keras.layers.Dense(2)(h))
        assert_export_serves(model, x, tmp_path)


def test_mixed_precision_close_to_float32():
    rng = np.random.default_rng(12)
    x, mask = sequences(rng)
    weights = random_block_weights(rng, 4)
    full = build_block(4, x)
    half = gk.layers.ResidualIndRNN(4, epsilon=EPSILON, dtype="mixed_float16")
    half.build(x.shape)
    set_block_weights(full, weights)
    set_block_weights(half, weights)
    m = keras.ops.convert_to_tensor(mask)
    out = half(x, mask=m, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(
        _np(out).astype("float32"), _np(full(x, mask=m, training=True)), atol=3e-2, rtol=3e-2
    )
