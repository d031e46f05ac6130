"""Clipping policies against independent NumPy implementations of the papers' formulas."""

import json
import re

import keras
import numpy as np
import pytest

from keras_gradkit import clipping


def _np(xs):
    return [None if x is None else keras.ops.convert_to_numpy(x) for x in xs]


def _grads(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(3, 4)) * scale).astype("float32"),
        (rng.normal(size=(4,)) * scale).astype("float32"),
        (rng.normal(size=(2, 3, 5)) * scale).astype("float32"),
    ]


def _np_global_norm(grads):
    return np.sqrt(sum(np.sum(np.asarray(g, "float64") ** 2) for g in grads if g is not None))


class TestPolicies:
    def test_clip_by_value_matches_numpy(self):
        grads = _grads()
        out = _np(clipping.ClipByValue(1.5)(grads))
        for g, o in zip(grads, out):
            np.testing.assert_allclose(o, np.minimum(np.maximum(g, -1.5), 1.5), rtol=0, atol=0)
        assert any(np.any(np.abs(g) > 1.5) for g in grads)

    def test_clip_by_norm_matches_numpy(self):
        grads = _grads()
        out = _np(clipping.ClipByNorm(2.0)(grads))
        for g, o in zip(grads, out):
            n = np.linalg.norm(g.ravel())
            np.testing.assert_allclose(o, g * min(1.0, 2.0 / n), rtol=1e-6)
        assert max(np.linalg.norm(g.ravel()) for g in grads) > 2.0

    def test_clip_by_global_norm_matches_numpy(self):
        grads = _grads()
        norm = _np_global_norm(grads)
        assert norm > 5.0
        out = _np(clipping.ClipByGlobalNorm(5.0)(grads))
        for g, o in zip(grads, out):
            np.testing.assert_allclose(o, g * 5.0 / norm, rtol=1e-6)
        np.testing.assert_allclose(_np_global_norm(out), 5.0, rtol=1e-6)

    def test_clip_by_global_norm_same_as_keras(self):
        grads = _grads()
        ours = _np(clipping.ClipByGlobalNorm(5.0)(grads))
        from keras.src.optimizers.base_optimizer import clip_by_global_norm

        theirs = _np(clip_by_global_norm([keras.ops.convert_to_tensor(g) for g in grads], 5.0))
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-6)

    @pytest.mark.parametrize(
        "policy",
        [
            clipping.ClipByValue(0.7),
            clipping.ClipByNorm(1.0),
            clipping.ClipByGlobalNorm(2.0),
            clipping.AdaptiveClip(0.05),
        ],
        ids=["value", "norm", "global_norm", "adaptive"],
    )
    def test_clipping_twice_equals_once(self, policy):
        grads = _grads(seed=3)
        variables = [
            keras.Variable(np.random.default_rng(9).normal(size=g.shape).astype("float32"))
            for g in grads
        ]
        once = policy(grads, variables)
        twice = _np(policy(once, variables))
        for a, b in zip(_np(once), twice):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    def test_small_gradients_pass_unchanged(self):
        grads = _grads(scale=1e-3)
        for policy in [
            clipping.ClipByValue(1.0),
            clipping.ClipByNorm(1.0),
            clipping.ClipByGlobalNorm(1.0),
        ]:
            _, _, info = policy.apply(grads, None, [])
            assert not bool(info["clipped"])
            for g, o in zip(grads, _np(policy(grads))):
                np.testing.assert_array_equal(g, o)

    def test_none_gradients_are_skipped(self):
        g = _grads()
        grads = [g[0], None, g[2]]
        for policy in [
            clipping.ClipByValue(1.0),
            clipping.ClipByNorm(1.0),
            clipping.ClipByGlobalNorm(1.0),
            clipping.NoClip(),
        ]:
            out = policy(grads)
            assert out[1] is None
        norm = _np_global_norm(grads)
        out = _np(clipping.ClipByGlobalNorm(1.0)(grads))
        np.testing.assert_allclose(out[0], g[0] / norm, rtol=1e-6)

    def test_float16_gradients_keep_dtype(self):
        grads = [g.astype("float16") for g in _grads()]
        for policy in [
            clipping.ClipByValue(1.0),
            clipping.ClipByNorm(1.0),
            clipping.ClipByGlobalNorm(1.0),
        ]:
            for o in policy(grads):
                assert keras.backend.standardize_dtype(o.dtype) == "float16"


class TestAutoClip:
    @pytest.mark.parametrize(
        "percentile,history_size", [(10.0, 100), (50.0, 3), (100.0, 4), (25.0, 1)]
    )
    def test_threshold_is_percentile_of_history(self, percentile, history_size):
        policy = clipping.AutoClip(percentile=percentile, history_size=history_size)
        state = policy.initial_state(None)
        rng = np.random.default_rng(4)
        seen = []
        for step in range(7):
            grads = _grads(seed=step, scale=float(rng.uniform(0.5, 5.0)))
            norm = _np_global_norm(grads)
            seen.append(norm)
            expected_threshold = np.percentile(seen[-history_size:], percentile)
            out, state, info = policy.apply(grads, None, state)
            np.testing.assert_allclose(float(info["threshold"]), expected_threshold, rtol=1e-5)
            scale = min(1.0, expected_threshold / norm)
            for g, o in zip(grads, _np(out)):
                np.testing.assert_allclose(o, g * scale, rtol=1e-5)
            assert bool(info["clipped"]) == (norm > expected_threshold * (1 + 1e-6))
        assert int(keras.ops.convert_to_numpy(state[1])) == 7

    def test_direct_call_does_not_clip(self):
        grads = _grads()
        for g, o in zip(grads, _np(clipping.AutoClip()(grads))):
            np.testing.assert_allclose(o, g, rtol=1e-6)

    def test_non_finite_norm_not_recorded(self):
        policy = clipping.AutoClip(percentile=50.0, history_size=4)
        state = policy.initial_state(None)
        _, state, _ = policy.apply([np.array([3.0], "float32")], None, state)
        _, state, info = policy.apply([np.array([np.inf], "float32")], None, state)
        assert int(keras.ops.convert_to_numpy(state[1])) == 1
        assert float(info["threshold"]) == pytest.approx(3.0)


def _np_agc(w, g, clipping_value, eps):
    """AGC written unit by unit: a unit is one output column (last axis) or one vector entry."""
    w = np.asarray(w, "float64")
    g = np.asarray(g, "float64")
    out = g.copy()
    if w.ndim <= 1:
        for idx in np.ndindex(w.shape):
            max_norm = clipping_value * max(abs(w[idx]), eps)
            if abs(g[idx]) > max_norm:
                out[idx] = g[idx] * max_norm / max(abs(g[idx]), 1e-6)
        return out
    for j in range(w.shape[-1]):
        wn = np.linalg.norm(w[..., j].ravel())
        gn = np.linalg.norm(g[..., j].ravel())
        max_norm = clipping_value * max(wn, eps)
        if gn > max_norm:
            out[..., j] = g[..., j] * max_norm / max(gn, 1e-6)
    return out


class TestAdaptiveClip:
    def _layer_variables(self):
        rng = np.random.default_rng(7)
        inputs = keras.Input((6, 6, 2))
        conv = keras.layers.Conv2D(3, 3, name="conv")
        rnn = keras.layers.SimpleRNN(4, name="rnn")
        dense = keras.layers.Dense(5, name="classifier")
        x = conv(inputs)
        x = keras.layers.Reshape((16, 3))(x)
        x = rnn(x)
        dense(x)
        indrnn_u = keras.Variable(rng.normal(size=(4,)).astype("float32"), name="recurrent_weight")
        variables = conv.weights + rnn.weights + dense.weights + [indrnn_u]
        for v in variables[:-1]:
            v.assign(rng.normal(size=v.shape).astype("float32"))
        variables[1].assign(
            np.zeros(variables[1].shape, "float32")
        )  # conv bias zero: epsilon matters
        grads = [
            (rng.normal(size=v.shape) * rng.choice([0.001, 1.0], size=v.shape[-1:] or (1,))).astype(
                "float32"
            )
            for v in variables
        ]
        return variables, grads

    def test_unit_norms_match_numpy_for_dense_conv_recurrent(self):
        variables, grads = self._layer_variables()
        ranks = sorted({len(v.shape) for v in variables})
        assert ranks == [1, 2, 4]
        out = _np(clipping.AdaptiveClip(clipping=0.05, epsilon=1e-3)(grads, variables))
        changed = 0
        for v, g, o in zip(variables, grads, out):
            expected = _np_agc(keras.ops.convert_to_numpy(v), g, 0.05, 1e-3)
            np.testing.assert_allclose(o, expected, rtol=1e-5, atol=1e-8, err_msg=v.path)
            changed += not np.allclose(o, g)
        assert changed >= 4

    def test_some_units_clipped_others_not(self):
        w = np.array([[1.0, 10.0], [0.0, 0.0]], "float32")  # unit norms 1 and 10
        g = np.array([[0.5, 0.5], [0.0, 0.0]], "float32")  # unit gradient norms 0.5 and 0.5
        out = _np(clipping.AdaptiveClip(clipping=0.1)([g], [keras.Variable(w)]))[0]
        np.testing.assert_allclose(out[:, 0], [0.1, 0.0], rtol=1e-6)  # limited to 0.1 * 1
        np.testing.assert_allclose(out[:, 1], [0.5, 0.0], rtol=1e-6)  # 0.5 <= 0.1 * 10: kept

    def test_exclude_by_path(self):
        variables, grads = self._layer_variables()
        out = _np(clipping.AdaptiveClip(clipping=0.05, exclude=["classifier"])(grads, variables))
        for v, g, o in zip(variables, grads, out):
            if "classifier" in v.path:
                np.testing.assert_array_equal(o, g)
            else:
                np.testing.assert_allclose(
                    o, _np_agc(keras.ops.convert_to_numpy(v), g, 0.05, 1e-3), rtol=1e-5, atol=1e-8
                )

    def test_needs_variables(self):
        with pytest.raises(ValueError, match="variables"):
            clipping.AdaptiveClip()(_grads())


class TestSkipAndChain:
    def test_skip_non_finite(self):
        policy = clipping.SkipNonFinite()
        grads = _grads()
        _, _, info = policy.apply(grads, None, [])
        assert not bool(info["skip"])
        for bad in (np.nan, np.inf, -np.inf):
            g = [x.copy() for x in grads]
            g[1][2] = bad
            _, _, info = policy.apply(g, None, [])
            assert bool(info["skip"])
            assert bool(policy.should_skip(g))

    def test_chain_applies_in_order(self):
        grads = _grads()
        policy = clipping.chain(clipping.ClipByValue(1.0), clipping.ClipByGlobalNorm(2.0))
        out, _, info = policy.apply(grads, None, [])
        clipped = [np.clip(g, -1.0, 1.0) for g in grads]
        norm = _np_global_norm(clipped)
        for c, o in zip(clipped, _np(out)):
            np.testing.assert_allclose(o, c * min(1.0, 2.0 / norm), rtol=1e-6)
        assert float(info["threshold"]) == 2.0
        assert bool(info["clipped"])
        policy = clipping.chain(clipping.ClipByGlobalNorm(2.0), clipping.SkipNonFinite())
        _, _, info = policy.apply(grads, None, [])
        assert float(info["threshold"]) == 2.0

    def test_chain_state_is_concatenated(self):
        policy = clipping.chain(
            clipping.SkipNonFinite(), clipping.AutoClip(50.0, 3), clipping.AutoClip(10.0, 2)
        )
        names = [s[0] for s in policy.state_spec(None)]
        assert names == ["1_history", "1_count", "2_history", "2_count"]
        state = policy.initial_state(None)
        out, state, _ = policy.apply(_grads(), None, state)
        assert [tuple(s.shape) for s in state] == [(3,), (), (2,), ()]


ALL_POLICIES = [
    clipping.NoClip(),
    clipping.ClipByValue(0.5),
    clipping.ClipByNorm(1.0),
    clipping.ClipByGlobalNorm(2.5),
    clipping.AutoClip(percentile=20.0, history_size=50),
    clipping.AdaptiveClip(clipping=0.02, epsilon=1e-4, exclude=["classifier", "head/.*"]),
    clipping.SkipNonFinite(),
    clipping.chain(clipping.SkipNonFinite(), clipping.AutoClip(5.0, 7)),
]


@pytest.mark.backend_free
class TestConfigAndErrors:
    @pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: type(p).__name__)
    def test_config_round_trip(self, policy):
        config = policy.get_config()
        restored = type(policy).from_config(config)
        assert restored.get_config() == config
        serialized = keras.saving.serialize_keras_object(policy)
        assert serialized["registered_name"] == f"keras_gradkit>{type(policy).__name__}"
        again = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
        assert type(again) is type(policy)
        assert again.get_config() == config
        assert clipping.get(serialized).get_config() == config

    @pytest.mark.parametrize(
        "cls,kwargs,arg",
        [
            (clipping.ClipByValue, {"max_value": -1.0}, "max_value"),
            (clipping.ClipByValue, {"max_value": 0.0}, "max_value"),
            (clipping.ClipByNorm, {"max_norm": -0.5}, "max_norm"),
            (clipping.ClipByGlobalNorm, {"max_norm": float("nan")}, "max_norm"),
            (clipping.ClipByGlobalNorm, {"max_norm": float("inf")}, "max_norm"),
            (clipping.AutoClip, {"percentile": 0.0}, "percentile"),
            (clipping.AutoClip, {"percentile": 100.5}, "percentile"),
            (clipping.AutoClip, {"history_size": 0}, "history_size"),
            (clipping.AdaptiveClip, {"clipping": 0.0}, "clipping"),
            (clipping.AdaptiveClip, {"clipping": -0.01}, "clipping"),
            (clipping.AdaptiveClip, {"epsilon": -1e-3}, "epsilon"),
            (clipping.AdaptiveClip, {"exclude": ["("]}, "exclude"),
        ],
    )
    def test_invalid_arguments(self, cls, kwargs, arg):
        with pytest.raises(
            ValueError, match=f"{arg}={re.escape(str(list(kwargs.values())[0]))}|{arg}="
        ):
            cls(**kwargs)
        with pytest.raises(ValueError, match=arg):
            cls(**kwargs)

    @pytest.mark.parametrize(
        "cls,kwargs,arg",
        [
            (clipping.ClipByValue, {"max_value": "1"}, "max_value"),
            (clipping.ClipByNorm, {"max_norm": True}, "max_norm"),
            (clipping.AutoClip, {"history_size": 10.5}, "history_size"),
            (clipping.AdaptiveClip, {"exclude": 3}, "exclude"),
            (clipping.AdaptiveClip, {"exclude": ["classifier", 3]}, "exclude"),
            (clipping.Chain, {"policies": [1.0]}, "policies"),
        ],
    )
    def test_wrong_types(self, cls, kwargs, arg):
        with pytest.raises(TypeError, match=arg):
            cls(**kwargs)

    def test_exclude_takes_one_pattern_or_a_list_as_gradient_board_does(self):
        # One validator for every regex argument (GradientBoard's include/exclude too).
        assert clipping.AdaptiveClip(exclude="classifier").exclude == ("classifier",)
        assert clipping.AdaptiveClip(exclude=["a", "b/.*"]).exclude == ("a", "b/.*")
        assert clipping.AdaptiveClip(exclude="x").get_config()["exclude"] == ["x"]

    def test_get_rejects_non_policies(self):
        with pytest.raises(TypeError, match="policy"):
            clipping.get("global_norm")

    @pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: type(p).__name__)
    def test_docstring_summary_is_one_line(self, policy):
        # The Args section against the signature: tests/test_docstrings.py.
        doc = type(policy).__doc__ or ""
        assert doc.strip().splitlines()[0].endswith(".")
