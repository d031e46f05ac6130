"""Sparse gradients (`tf.IndexedSlices` from `Embedding`) against a dense NumPy reference.

32 sequences of 10 tokens over an Embedding of 20 ids: the ids used repeat,
so the slices' rows taken as they are (as `tf.linalg.global_norm` and Keras's
`global_clipnorm` take them) are not the dense gradient, and the last ids
never occur, so the dense gradient also has zero rows.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_gradkit import backend, clipping
from keras_gradkit.optimizers import ClippedOptimizer

sparse = backend.get("sparse")
VOCAB, DIM, BATCH, LENGTH = 20, 4, 32, 10
USED = 16  # ids 16-19 never occur


def _np_dense(g):
    """The dense gradient: NumPy scatter-add of the slices' rows (duplicates summed)."""
    if not sparse.is_sparse(g):
        return np.asarray(g, "float64")
    out = np.zeros(tuple(int(d) for d in g.dense_shape), "float64")
    np.add.at(out, np.asarray(g.indices), np.asarray(g.values, "float64"))
    return out


def _np_norm(grads):
    return float(np.sqrt(sum(np.sum(g**2) for g in grads)))


class _Case:
    """An Embedding(20, 4) table, a Dense head and a per-token bias vector
    (a rank-1 sparse gradient), with their gradient from a tape."""

    def __init__(self, seed=0, scale=1.0):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        self.tokens = rng.integers(0, USED, size=(BATCH, LENGTH)).astype("int32")
        targets = (rng.normal(size=(BATCH, 3)) * 5.0).astype("float32")
        self.embedding = keras.layers.Embedding(VOCAB, DIM, embeddings_initializer="random_normal")
        self.dense = keras.layers.Dense(3)
        self.embedding.build((BATCH, LENGTH))
        self.dense.build((BATCH, DIM))
        self.bias = keras.Variable(rng.normal(size=(VOCAB,)).astype("float32"), name="token_bias")
        self.variables = [
            *self.embedding.trainable_variables,
            *self.dense.trainable_variables,
            self.bias,
        ]
        with tf.GradientTape() as tape:
            pooled = ops.mean(self.embedding(self.tokens), axis=1)
            out = (
                self.dense(pooled)
                + ops.mean(ops.take(self.bias, self.tokens, axis=0), axis=1)[:, None]
            )
            loss = scale * ops.mean(ops.square(out - targets))
        self.raw = tape.gradient(loss, self.variables)
        self.dense_grads = [_np_dense(g) for g in self.raw]
        self.norm = _np_norm(self.dense_grads)


def _assert_same_as_dense(sparse_out, dense_out, rtol=1e-5):
    for s, d in zip(sparse_out, dense_out):
        np.testing.assert_allclose(_np_dense(s), ops.convert_to_numpy(d), rtol=rtol, atol=1e-7)


class _UserClip(clipping.ClippingPolicy):
    """A user-written policy on plain `keras.ops` (no keras_gradkit helpers)."""

    def apply(self, grads, variables, state):
        norm = clipping.global_norm(grads)
        factor = ops.minimum(1.0, 0.5 / norm)
        new = [None if g is None else ops.clip(ops.multiply(g, factor), -0.05, 0.05) for g in grads]
        info = {
            "threshold": ops.convert_to_tensor(0.5),
            "clipped": norm > 0.5,
            "skip": ops.convert_to_tensor(False),
        }
        return new, [], info


# Thresholds relative to the dense gradient, so that the clipping policies clip.
POLICIES = {
    "value": lambda c: clipping.ClipByValue(0.3 * max(np.abs(g).max() for g in c.dense_grads)),
    "norm": lambda c: clipping.ClipByNorm(0.3 * np.linalg.norm(c.dense_grads[0])),
    "global_norm": lambda c: clipping.ClipByGlobalNorm(0.5 * c.norm),
    "autoclip": lambda c: clipping.AutoClip(percentile=50.0, history_size=4),
    "adaptive": lambda c: clipping.AdaptiveClip(clipping=0.05),
    "skip_non_finite": lambda c: clipping.SkipNonFinite(),
    "no_clip": lambda c: clipping.NoClip(),
    "chain": lambda c: clipping.chain(
        clipping.SkipNonFinite(),
        clipping.ClipByValue(0.5 * np.abs(c.dense_grads[0]).max()),
        clipping.ClipByGlobalNorm(0.5 * c.norm),
    ),
    "user_written": lambda c: _UserClip(),
}
CLIPS = {"value", "norm", "global_norm", "autoclip", "adaptive", "chain", "user_written"}


@pytest.fixture
def case():
    return _Case()


class TestDeduplicate:
    def test_dense_gradients_and_none_pass_unchanged(self):
        x = ops.ones((3, 2))
        out = sparse.deduplicate([x, None])
        assert out[0] is x and out[1] is None
        assert not sparse.is_sparse(x)
        assert sparse.values_of(x) is x and sparse.to_dense(x) is x

    @pytest.mark.tensorflow_only
    def test_duplicate_rows_are_summed(self, case):
        raw = case.raw[0]
        assert sparse.is_sparse(raw) and len(raw.indices) == BATCH * LENGTH
        (out,) = sparse.deduplicate([raw])
        indices = np.asarray(out.indices)
        assert sorted(indices) == sorted(np.unique(case.tokens))
        assert not case.dense_grads[0][USED:].any()
        np.testing.assert_allclose(
            np.asarray(out.values), case.dense_grads[0][indices], rtol=1e-5, atol=1e-8
        )
        np.testing.assert_allclose(_np_dense(out), case.dense_grads[0], rtol=1e-5, atol=1e-8)
        dense = ops.convert_to_numpy(sparse.to_dense(raw))
        np.testing.assert_allclose(dense, case.dense_grads[0], rtol=1e-5, atol=1e-8)

    @pytest.mark.tensorflow_only
    def test_under_xla(self, case):
        import tensorflow as tf

        norm = tf.function(lambda g: clipping.global_norm(sparse.deduplicate(g)), jit_compile=True)(
            case.raw
        )
        assert float(norm) == pytest.approx(case.norm, rel=1e-5)


@pytest.mark.tensorflow_only
class TestPoliciesOnSparseGradients:
    def test_global_norm_is_the_dense_norm(self, case):
        import tensorflow as tf

        assert float(clipping.global_norm(case.raw)) == pytest.approx(case.norm, rel=1e-5)
        assert float(clipping.global_norm(sparse.deduplicate(case.raw))) == pytest.approx(
            case.norm, rel=1e-5
        )
        # The issue: the rows' squares summed as they are, duplicates apart.
        assert float(tf.linalg.global_norm(case.raw)) != pytest.approx(case.norm, rel=1e-2)

    @pytest.mark.parametrize("name", list(POLICIES))
    def test_policy_on_slices_equals_policy_on_dense(self, case, name):
        policy = POLICIES[name](case)
        grads = sparse.deduplicate(case.raw)
        states = [policy.initial_state(case.variables)] * 2
        # Two steps, a small gradient first, so that AutoClip's threshold is below the second norm.
        for scale in (0.2, 1.0):
            scaled = [ops.multiply(g, scale) for g in grads]
            dense = [ops.convert_to_tensor(g * scale, "float32") for g in case.dense_grads]
            out_s, state_s, info_s = policy.apply(scaled, case.variables, states[0])
            out_d, state_d, info_d = policy.apply(dense, case.variables, states[1])
            states = [state_s, state_d]
            assert [sparse.is_sparse(g) for g in out_s] == [True, False, False, True]
            _assert_same_as_dense(out_s, out_d)
            for a, b in zip(state_s, state_d):
                np.testing.assert_allclose(
                    ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-5
                )
            for key in ("threshold", "clipped", "skip"):
                a, b = ops.convert_to_numpy(info_s[key]), ops.convert_to_numpy(info_d[key])
                np.testing.assert_allclose(a, b, rtol=1e-5)
        assert bool(info_s["clipped"]) == (name in CLIPS)

    def test_direct_call_deduplicates(self, case):
        t = 0.5 * case.norm
        out = clipping.ClipByGlobalNorm(t)(case.raw)
        for o, d in zip(out, case.dense_grads):
            np.testing.assert_allclose(_np_dense(o), d * t / case.norm, rtol=1e-5, atol=1e-8)
        assert len(np.unique(np.asarray(out[0].indices))) == len(out[0].indices)

    def test_non_finite_row_skips(self, case):
        import tensorflow as tf

        grads = sparse.deduplicate(case.raw)
        values = tf.tensor_scatter_nd_update(grads[0].values, [[0, 1]], [np.nan])
        grads[0] = sparse.with_values(grads[0], values)
        _, _, info = clipping.SkipNonFinite().apply(grads, case.variables, [])
        assert bool(info["skip"])

    @pytest.mark.parametrize(
        "name,fn,stays_sparse",
        [
            ("multiply", lambda g: ops.multiply(g, 0.5), True),
            ("clip", lambda g: ops.clip(g, -0.01, 0.01), True),
            ("abs", ops.abs, True),
            ("square", ops.square, True),
            ("sqrt", lambda g: ops.sqrt(ops.abs(g)), True),
            ("divide", lambda g: ops.divide(g, 2.0), True),
            ("sum", ops.sum, False),
            ("where", lambda g: ops.where(True, g, 0.0), False),
            ("maximum", lambda g: ops.maximum(g, 0.0), False),
            ("greater", lambda g: ops.greater(g, 0.0), False),
            ("isfinite", ops.isfinite, False),
        ],
    )
    def test_keras_ops_on_deduplicated_slices(self, case, name, fn, stays_sparse):
        """What the `ClippingPolicy` docstring tells policy writers about `keras.ops`."""
        (g,) = sparse.deduplicate(case.raw[:1])
        out = fn(g)
        assert sparse.is_sparse(out) == stays_sparse
        expected = ops.convert_to_numpy(fn(ops.convert_to_tensor(case.dense_grads[0], "float32")))
        np.testing.assert_allclose(_np_dense(out), expected, rtol=1e-5, atol=1e-8)

    def test_python_operators_are_not_defined_on_slices(self, case):
        (g,) = sparse.deduplicate(case.raw[:1])
        with pytest.raises(TypeError):
            g * 0.5  # noqa: B015  (the operator must raise)
        with pytest.raises(TypeError):
            g > 0.5  # noqa: B015  (the operator must raise)


@pytest.mark.tensorflow_only
class TestClippedOptimizerOnSparseGradients:
    @pytest.mark.parametrize("mode", ["eager", "function", "jit"])
    def test_sgd_step_is_the_dense_clipped_update_and_stays_sparse(self, mode):
        import tensorflow as tf

        case = _Case(scale=4.0)
        assert case.norm > 0.5
        opt = ClippedOptimizer(keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(0.5))
        opt.build(case.variables)
        seen = []
        inner_apply = opt.inner_optimizer.apply

        def recording_apply(grads, trainable_variables=None):
            seen.append([sparse.is_sparse(g) for g in grads])
            return inner_apply(grads, trainable_variables)

        opt.inner_optimizer.apply = recording_apply
        before = [v.numpy() for v in case.variables]
        if mode == "eager":
            opt.apply(case.raw, case.variables)
        else:
            tf.function(lambda g: opt.apply(g, case.variables), jit_compile=mode == "jit")(case.raw)
        scale = min(1.0, 0.5 / case.norm)
        for v, w, g in zip(case.variables, before, case.dense_grads):
            np.testing.assert_allclose(v.numpy(), w - 0.1 * scale * g, rtol=1e-5, atol=1e-7)
        assert seen == [[True, False, False, True]]
        stats = opt.gradient_statistics()
        assert stats["global_norm"] == pytest.approx(case.norm, rel=1e-5)
        assert stats["global_norm_clipped"] == pytest.approx(0.5, rel=1e-5)
        table_norm = np.linalg.norm(case.dense_grads[0])
        assert stats[f"gradient_norm/{case.variables[0].path}"] == pytest.approx(
            table_norm, rel=1e-5
        )

    def test_keras_global_clipnorm_clips_by_the_rows_as_they_are(self):
        """The issue's contrast: Keras's own `global_clipnorm` misses the dense norm."""
        case = _Case(scale=4.0)
        before = [v.numpy() for v in case.variables]
        keras.optimizers.SGD(0.1, global_clipnorm=0.5).apply(case.raw, case.variables)
        dense_correct = before[0] - 0.1 * min(1.0, 0.5 / case.norm) * case.dense_grads[0]
        assert not np.allclose(case.variables[0].numpy(), dense_correct, rtol=1e-3, atol=0)
