"""ClippedOptimizer: the policy sees the gradient the update uses; statistics; saving."""

import inspect
import json
import os
import re

import keras
import numpy as np
import pytest

import keras_gradkit as gk
from keras_gradkit import clipping
from keras_gradkit.optimizers import ClippedOptimizer
from tests.gradient_testing import value_and_gradients

BACKEND = keras.backend.backend()
# `jit_compile=True` is XLA on TensorFlow and JAX; torch.compile is not part of what is tested.
JIT = pytest.param(
    True, id="jit", marks=pytest.mark.skipif(BACKEND == "torch", reason="no XLA on torch")
)


def _model(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="out"),
        ]
    )


def _data(n=16, scale=20.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype("float32"), (rng.normal(size=(n, 2)) * scale).astype(
        "float32"
    )


def _batches(x, y, batch_size):
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def _gradients(model, xb, yb):
    loss = lambda: keras.losses.MeanSquaredError()(yb, model(xb))
    _, _, grads = value_and_gradients(loss, variables=model.trainable_variables)
    return [g.astype("float64") for g in grads]


def _np_norm(grads):
    return float(np.sqrt(sum(np.sum(g**2) for g in grads)))


def _sgd_reference(model, batches, lr, transform):
    """Plain-NumPy SGD on the twin model: w <- w - lr * transform(g, step)."""
    for step, (xb, yb) in enumerate(batches):
        grads = transform(_gradients(model, xb, yb), step)
        for v, g in zip(model.trainable_variables, grads):
            v.assign((v.numpy() - lr * g).astype("float32"))
    return model.get_weights()


def _compiled_apply(opt, grads, variables, jit):
    """One `apply` in the backend's compiled form: a `tf.function` (XLA when
    `jit`) on TensorFlow, `stateless_apply` (under `jax.jit` when `jit`) on
    JAX, as Keras's trainers call it."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tf.function(lambda g: opt.apply(g, variables), jit_compile=jit)(
            [tf.constant(g) for g in grads]
        )
    elif BACKEND == "jax":
        import jax

        step = jax.jit(opt.stateless_apply) if jit else opt.stateless_apply
        new_vars, new_opt = step(
            [v.value for v in opt.variables], grads, [v.value for v in variables]
        )
        for v, value in zip(list(variables) + list(opt.variables), list(new_vars) + list(new_opt)):
            v.assign(value)
    else:
        pytest.skip("torch runs eagerly: no graph or compiled form to test")


def _assert_weights_close(a, b, atol=1e-6):
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, atol=atol, rtol=0)


class TestAgainstReferences:
    @pytest.mark.parametrize("jit", [pytest.param(False, id="eager_graph"), JIT])
    def test_global_norm_same_as_keras_global_clipnorm(self, jit):
        x, y = _data()
        ours = _model()
        opt = ClippedOptimizer(keras.optimizers.Adam(0.05), clipping.ClipByGlobalNorm(1.0))
        ours.compile(optimizer=opt, loss="mse", jit_compile=jit)
        ours.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        theirs = _model()
        theirs.compile(
            optimizer=keras.optimizers.Adam(0.05, global_clipnorm=1.0), loss="mse", jit_compile=jit
        )
        theirs.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        _assert_weights_close(ours.get_weights(), theirs.get_weights())
        assert opt.gradient_statistics()["clipped_steps"] == 8.0
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 8

    @pytest.mark.parametrize(
        "jit,steps_per_execution",
        [
            (False, 1),
            pytest.param(True, 1, marks=JIT.marks),
            pytest.param(
                False,
                3,
                marks=pytest.mark.skipif(
                    BACKEND == "torch", reason="torch runs one step at a time"
                ),
            ),
        ],
    )
    def test_autoclip_against_numpy(self, jit, steps_per_execution):
        x, y = _data(n=24)
        policy = clipping.AutoClip(percentile=30.0, history_size=4)
        model = _model()
        opt = ClippedOptimizer(keras.optimizers.SGD(0.05), policy)
        model.compile(
            optimizer=opt, loss="mse", jit_compile=jit, steps_per_execution=steps_per_execution
        )
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

        history = []

        def autoclip(grads, step):
            norm = _np_norm(grads)
            history.append(norm)
            threshold = np.percentile(history[-4:], 30.0)
            return [g * min(1.0, threshold / norm) for g in grads]

        expected = _sgd_reference(_model(), _batches(x, y, 4), 0.05, autoclip)
        _assert_weights_close(model.get_weights(), expected, atol=2e-6)
        stats = opt.gradient_statistics()
        assert stats["steps"] == 6.0
        assert stats["threshold"] == pytest.approx(np.percentile(history[-4:], 30.0), rel=1e-5)
        assert stats["global_norm"] == pytest.approx(history[-1], rel=1e-5)
        assert stats["clipped_steps"] == sum(
            h > np.percentile(history[: i + 1][-4:], 30.0) + 1e-6 for i, h in enumerate(history)
        )

    def test_sgd_with_global_norm_in_fit_against_numpy(self):
        x, y = _data(n=16)
        model = _model()
        opt = ClippedOptimizer(keras.optimizers.SGD(0.05), clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        norms = []

        def clip(grads, step):
            norms.append(_np_norm(grads))
            return [g * min(1.0, 1.0 / norms[-1]) for g in grads]

        expected = _sgd_reference(_model(), _batches(x, y, 4) * 2, 0.05, clip)
        _assert_weights_close(model.get_weights(), expected, atol=2e-6)
        stats = opt.gradient_statistics()
        assert stats["global_norm"] == pytest.approx(norms[-1], rel=1e-5)
        assert stats["clipped_steps"] == sum(n > 1.0 for n in norms) > 0

    def test_adaptive_clip_in_training_against_numpy(self):
        x, y = _data(n=8)
        model = _model()
        policy = clipping.AdaptiveClip(clipping=0.05, exclude=["out/bias"])
        model.compile(optimizer=ClippedOptimizer(keras.optimizers.SGD(0.1), policy), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        ref = _model()

        def agc(grads, step):
            out = []
            for v, g in zip(ref.trainable_variables, grads):
                w = v.numpy().astype("float64")
                if v.path.endswith("out/bias"):
                    out.append(g)
                    continue
                if w.ndim == 1:
                    m = 0.05 * np.maximum(np.abs(w), 1e-3)
                    gn = np.abs(g)
                else:
                    m = 0.05 * np.maximum(np.linalg.norm(w, axis=0), 1e-3)
                    gn = np.linalg.norm(g, axis=0)
                out.append(np.where(gn > m, g * m / np.maximum(gn, 1e-6), g))
            return out

        _assert_weights_close(model.get_weights(), _sgd_reference(ref, _batches(x, y, 4), 0.1, agc))

    def test_gradient_accumulation_clips_the_averaged_gradient(self):
        x, y = _data(n=16)
        model = _model()
        inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
        opt = ClippedOptimizer(inner, clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

        ref = _model()
        for k in range(2):
            (x1, y1), (x2, y2) = _batches(x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8], 4)
            g = [(a + b) / 2 for a, b in zip(_gradients(ref, x1, y1), _gradients(ref, x2, y2))]
            norm = _np_norm(g)
            assert norm > 1.0
            for v, gi in zip(ref.trainable_variables, g):
                v.assign((v.numpy() - 0.1 * gi * min(1.0, 1.0 / norm)).astype("float32"))
        _assert_weights_close(model.get_weights(), ref.get_weights())
        stats = opt.gradient_statistics()
        assert stats["steps"] == 2.0 and stats["clipped_steps"] == 2.0
        assert stats["global_norm"] == pytest.approx(norm, rel=1e-5)
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 2

    def test_no_clip_keeps_keras_clipnorm_and_reports_it(self):
        x, y = _data()
        for arg, policy_cls in [
            ("clipnorm", clipping.ClipByNorm),
            ("global_clipnorm", clipping.ClipByGlobalNorm),
            ("clipvalue", clipping.ClipByValue),
        ]:
            ours = _model()
            opt = ClippedOptimizer(keras.optimizers.Adam(0.05, **{arg: 0.5}), clipping.NoClip())
            ours.compile(optimizer=opt, loss="mse")
            ours.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            theirs = _model()
            theirs.compile(optimizer=keras.optimizers.Adam(0.05, **{arg: 0.5}), loss="mse")
            theirs.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            for a, b in zip(ours.get_weights(), theirs.get_weights()):
                np.testing.assert_array_equal(a, b)
            stats = opt.gradient_statistics()
            assert stats["threshold"] == 0.5
            assert stats["clipped"] == 1.0
            assert isinstance(opt._report_policy, policy_cls)

    def test_explicit_policy_with_keras_clipping_is_an_error(self):
        for arg in ("clipnorm", "global_clipnorm", "clipvalue"):
            with pytest.raises(ValueError, match=f"{arg}=1.0.*choose one"):
                ClippedOptimizer(keras.optimizers.SGD(**{arg: 1.0}), clipping.ClipByGlobalNorm(1.0))
        inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(clipnorm=1.0))
        with pytest.raises(ValueError, match="choose one"):
            ClippedOptimizer(inner, clipping.AutoClip())


class TestStatistics:
    def _apply(self, jit, record_gradients=False):
        v1 = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"), name="a")
        v2 = keras.Variable(np.array([0.1, 0.2, 0.3], "float32"), name="b")
        opt = ClippedOptimizer(
            keras.optimizers.SGD(0.5),
            clipping.ClipByGlobalNorm(2.0),
            record_gradients=record_gradients,
        )
        g1 = np.array([[3.0, 0.0], [0.0, 4.0]], "float32")
        g2 = np.array([0.0, 0.0, 12.0], "float32")
        if jit is None:
            opt.apply([g1, g2], [v1, v2])
        else:
            opt.build([v1, v2])
            _compiled_apply(opt, [g1, g2], [v1, v2], jit)
        return opt, v1, v2, g1, g2

    @pytest.mark.parametrize(
        "jit", [pytest.param(None, id="eager"), pytest.param(False, id="graph"), JIT]
    )
    def test_values(self, jit):
        opt, v1, v2, g1, g2 = self._apply(jit)
        stats = opt.gradient_statistics()
        assert stats["global_norm"] == pytest.approx(13.0)
        assert stats["global_norm_clipped"] == pytest.approx(2.0)
        assert stats["threshold"] == 2.0
        assert stats["clipped"] == 1.0
        assert (stats["steps"], stats["clipped_steps"], stats["skipped_steps"]) == (1.0, 1.0, 0.0)
        assert stats["gradient_norm/a"] == pytest.approx(5.0)
        assert stats["gradient_norm/b"] == pytest.approx(12.0)
        # SGD: |delta w| = lr * |clipped g| = 0.5 * |g| * 2 / 13
        assert stats["update_norm/a"] == pytest.approx(0.5 * 5.0 * 2.0 / 13.0, rel=1e-5)
        assert stats["update_norm/b"] == pytest.approx(0.5 * 12.0 * 2.0 / 13.0, rel=1e-5)
        assert stats["weight_norm/a"] == pytest.approx(np.linalg.norm(v1.numpy()), rel=1e-6)
        assert stats["weight_norm/b"] == pytest.approx(np.linalg.norm(v2.numpy()), rel=1e-6)
        assert all(isinstance(v, float) for v in stats.values())
        np.testing.assert_allclose(v2.numpy(), [0.1, 0.2, 0.3 - 0.5 * 12.0 * 2.0 / 13.0], rtol=1e-6)

    def test_keys(self):
        opt, *_ = self._apply(None)
        assert set(opt.gradient_statistics()) == {
            "global_norm", "global_norm_clipped", "threshold", "clipped", "steps", "clipped_steps", "skipped_steps",
            "gradient_norm/a", "gradient_norm/b", "update_norm/a", "update_norm/b", "weight_norm/a", "weight_norm/b",
        }  # fmt: skip
        assert [v.path for v in opt.watched_variables] == ["a", "b"]
        fresh = ClippedOptimizer(keras.optimizers.SGD(), clipping.AdaptiveClip())
        before = fresh.gradient_statistics()
        assert before["steps"] == 0.0 and np.isnan(before["threshold"])
        no_updates = ClippedOptimizer(
            keras.optimizers.SGD(), clipping.NoClip(), record_update_norms=False
        )
        no_updates.build([keras.Variable(1.0, name="c")])
        assert "update_norm/c" not in no_updates.gradient_statistics()
        assert "weight_norm/c" not in no_updates.gradient_statistics()
        assert "gradient_norm/c" in no_updates.gradient_statistics()

    @pytest.mark.parametrize("jit", [pytest.param(None, id="eager"), JIT])
    def test_last_gradients(self, jit):
        opt, v1, v2, g1, g2 = self._apply(jit, record_gradients=True)
        last = opt.last_gradients()
        np.testing.assert_allclose(last["a"], g1 * 2.0 / 13.0, rtol=1e-6)
        np.testing.assert_allclose(last["b"], g2 * 2.0 / 13.0, rtol=1e-6)
        opt, *_ = self._apply(None)
        with pytest.raises(ValueError, match="record_gradients"):
            opt.last_gradients()
        assert not any("last_gradient" in v.path for v in opt.variables)


class TestSkipNonFinite:
    @pytest.mark.parametrize("jit", [pytest.param(False, id="graph"), JIT])
    def test_nan_batch_leaves_weights_and_slots_unchanged(self, jit):
        x, y = _data(n=8)
        model = _model()
        opt = ClippedOptimizer(
            keras.optimizers.Adam(0.01),
            clipping.chain(clipping.SkipNonFinite(), clipping.AutoClip(50.0, 10)),
        )
        model.compile(optimizer=opt, loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        weights = model.get_weights()
        slots = [v.numpy().copy() for v in opt.variables if "clipped_optimizer" not in v.path]
        history = opt.variables[
            [v.path for v in opt.variables].index("clipped_optimizer/policy_1_history")
        ].numpy()
        x_bad = x.copy()
        x_bad[3, 1] = np.nan
        model.fit(x_bad, y, batch_size=8, epochs=1, verbose=0)
        for a, b in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        for a, v in zip(slots, [v for v in opt.variables if "clipped_optimizer" not in v.path]):
            np.testing.assert_array_equal(a, v.numpy(), err_msg=v.path)
        stats = opt.gradient_statistics()
        assert (stats["steps"], stats["skipped_steps"]) == (2.0, 1.0)
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 1
        assert np.isnan(stats["global_norm"])
        np.testing.assert_array_equal(history, opt._policy_state[0].numpy())
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 2
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
        assert not any(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))

    def test_skip_under_gradient_accumulation_keeps_accumulator_finite(self):
        x, y = _data(n=8)
        model = _model()
        inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
        opt = ClippedOptimizer(inner, clipping.SkipNonFinite())
        model.compile(optimizer=opt, loss="mse")
        x_bad = x.copy()
        x_bad[0, 0] = np.nan
        model.fit(x_bad[:4], y[:4], batch_size=4, verbose=0)  # micro-step 1: skipped
        assert all(np.all(np.isfinite(v.numpy())) for v in inner.variables)
        model.fit(x, y, batch_size=4, verbose=0)  # two finite micro-steps: one update
        ref = _model()
        g = [
            (a + b) / 2
            for a, b in zip(_gradients(ref, x[:4], y[:4]), _gradients(ref, x[4:], y[4:]))
        ]
        for v, gi in zip(ref.trainable_variables, g):
            v.assign((v.numpy() - 0.1 * gi).astype("float32"))
        _assert_weights_close(model.get_weights(), ref.get_weights())
        assert opt.gradient_statistics()["skipped_steps"] == 0.0  # micro-steps are not updates
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 1


class TestMixedPrecision:
    def _mp_model(self):
        keras.utils.set_random_seed(1)
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="tanh", dtype="mixed_float16"),
                keras.layers.Dense(2, dtype="float32"),
            ]
        )

    def _reference_norm(self, model, x, y):
        twin = _model()
        twin.set_weights(model.get_weights())
        return _np_norm(_gradients(twin, x, y))

    def test_loss_scale_optimizer_outside(self):
        x, y = _data(n=8, scale=0.5)
        keras.config.set_dtype_policy("mixed_float16")
        model = self._mp_model()
        opt = ClippedOptimizer(keras.optimizers.SGD(0.01), clipping.ClipByGlobalNorm(0.1))
        model.compile(optimizer=opt, loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        expected_norm = self._reference_norm(model, x, y)
        assert expected_norm > 0.1
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        stats = opt.gradient_statistics()
        assert stats["global_norm"] == pytest.approx(expected_norm, rel=2e-2)
        assert stats["global_norm_clipped"] == pytest.approx(0.1, rel=1e-3)
        assert stats["steps"] == 1.0

    def test_loss_scale_optimizer_inside(self):
        x, y = _data(n=8)
        keras.config.set_dtype_policy("mixed_float16")
        model = self._mp_model()
        lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01), initial_scale=2.0**10)
        opt = ClippedOptimizer(lso, clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse", auto_scale_loss=False)
        expected_norm = self._reference_norm(model, x, y)
        before = model.get_weights()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        stats = opt.gradient_statistics()
        assert stats["global_norm"] == pytest.approx(expected_norm, rel=2e-2)
        assert stats["global_norm_clipped"] == pytest.approx(1.0, rel=1e-3)
        # the update is SGD on the clipped, unscaled gradient: |delta w| = lr * 1.0
        delta = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(before, model.get_weights())))
        assert delta == pytest.approx(0.01, rel=1e-2)
        assert int(keras.ops.convert_to_numpy(opt.iterations)) == 1

    def test_loss_scale_optimizer_inside_still_lowers_its_scale(self):
        x, y = _data(n=8)
        keras.config.set_dtype_policy("mixed_float16")
        model = self._mp_model()
        lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01), initial_scale=2.0**40)
        opt = ClippedOptimizer(
            lso, clipping.chain(clipping.SkipNonFinite(), clipping.ClipByGlobalNorm(1.0))
        )
        model.compile(optimizer=opt, loss="mse", auto_scale_loss=False)
        before = model.get_weights()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # float16 overflow at this scale
        assert float(lso.dynamic_scale.numpy()) == 2.0**39
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert opt.gradient_statistics()["skipped_steps"] == 1.0


class TestSaving:
    def test_save_load_resume_matches_uninterrupted(self, tmp_path):
        x, y = _data(n=24)
        policy = lambda: clipping.chain(
            clipping.SkipNonFinite(), clipping.AutoClip(percentile=25.0, history_size=4)
        )

        def fresh():
            model = _model()
            model.compile(
                optimizer=ClippedOptimizer(keras.optimizers.Adam(0.05), policy()), loss="mse"
            )
            return model

        straight = fresh()
        straight.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)

        first = fresh()
        first.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        path = os.path.join(str(tmp_path), "m.keras")
        first.save(path)
        loaded = keras.models.load_model(path)
        opt = loaded.optimizer
        assert isinstance(opt, ClippedOptimizer)
        assert opt.policy.get_config() == policy().get_config()
        # Saved and loaded: every optimizer variable (counters, policy state, the inner optimizer's);
        # the latest step's statistics are not variables, and read NaN until the next update.
        saved = first.optimizer.variables
        assert len(saved) == len(opt.variables)
        assert not [
            v.path
            for v in opt.variables
            if "norm" in v.path or "latest" in v.path or "gradient" in v.path
        ]
        for a, b in zip(saved, opt.variables):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path
            )
        assert np.isnan(opt.gradient_statistics()["global_norm"])
        assert all(
            np.isnan(v)
            for k, v in opt.gradient_statistics().items()
            if k.startswith("gradient_norm/")
        )
        assert int(opt._policy_state[1].numpy()) == 6
        assert opt.gradient_statistics()["steps"] == 6.0
        loaded.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        _assert_weights_close(loaded.get_weights(), straight.get_weights(), atol=1e-6)
        resumed_stats = opt.gradient_statistics()
        straight_stats = straight.optimizer.gradient_statistics()
        assert [k.split("/")[0] for k in resumed_stats] == [k.split("/")[0] for k in straight_stats]
        assert list(resumed_stats.values()) == pytest.approx(
            list(straight_stats.values()), rel=1e-5
        )
        assert resumed_stats["steps"] == 12.0

    def test_config_round_trip(self):
        opt = ClippedOptimizer(
            keras.optimizers.Adam(0.003),
            clipping.AdaptiveClip(0.02, exclude=["out"]),
            record_gradients=True,
            name="clip",
        )
        config = opt.get_config()
        restored = ClippedOptimizer.from_config(config)
        assert restored.get_config() == config
        serialized = keras.saving.serialize_keras_object(opt)
        assert serialized["registered_name"] == "keras_gradkit>ClippedOptimizer"
        again = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
        assert type(again) is ClippedOptimizer
        assert again.get_config() == config
        assert float(again.learning_rate.numpy()) == pytest.approx(0.003)


class TestArguments:
    def test_invalid_arguments(self):
        with pytest.raises(TypeError, match="inner_optimizer"):
            ClippedOptimizer(3, clipping.NoClip())
        with pytest.raises(ValueError, match="inner_optimizer.*adamm"):
            ClippedOptimizer("adamm", clipping.NoClip())

    def test_inner_optimizer_as_keras_optimizers_get_takes_it(self):
        by_name = ClippedOptimizer("adam", clipping.NoClip())
        assert isinstance(by_name.inner_optimizer, keras.optimizers.Adam)
        config = keras.optimizers.serialize(keras.optimizers.SGD(0.25, momentum=0.5))
        by_config = ClippedOptimizer(config, clipping.ClipByGlobalNorm(1.0))
        assert isinstance(by_config.inner_optimizer, keras.optimizers.SGD)
        assert by_config.inner_optimizer.momentum == 0.5
        assert float(keras.ops.convert_to_numpy(by_config.learning_rate)) == pytest.approx(0.25)
        with pytest.raises(TypeError, match="policy"):
            ClippedOptimizer(keras.optimizers.SGD(), 1.0)
        with pytest.raises(TypeError, match="record_gradients"):
            ClippedOptimizer(keras.optimizers.SGD(), clipping.NoClip(), record_gradients=1)
        for arg in (
            "clipnorm",
            "global_clipnorm",
            "clipvalue",
            "weight_decay",
            "gradient_accumulation_steps",
        ):
            with pytest.raises(ValueError, match=f"`{arg}`.*{arg}=2.*inner_optimizer"):
                ClippedOptimizer(keras.optimizers.SGD(), clipping.NoClip(), **{arg: 2})
        with pytest.raises(ValueError, match="foo"):
            ClippedOptimizer(keras.optimizers.SGD(), clipping.NoClip(), foo=1)

    def test_forwards_learning_rate_and_iterations(self):
        inner = keras.optimizers.SGD(0.25)
        opt = ClippedOptimizer(inner, clipping.NoClip())
        assert float(opt.learning_rate.numpy()) == 0.25
        opt.learning_rate = 0.125
        assert float(inner.learning_rate.numpy()) == 0.125
        assert opt.iterations is inner.iterations

    def test_public_paths_and_docstring(self):
        assert gk.optimizers.ClippedOptimizer is ClippedOptimizer
        doc = ClippedOptimizer.__doc__
        section = doc.split("Args:")[1].split("\n\n")[0]
        documented = re.findall(r"^\s{8}(\w+):", section, flags=re.M)
        params = [
            p
            for p in inspect.signature(ClippedOptimizer.__init__).parameters
            if p not in ("self", "kwargs")
        ]
        assert documented == params
        for key in (
            "global_norm",
            "global_norm_clipped",
            "threshold",
            "clipped",
            "steps",
            "clipped_steps",
            "skipped_steps",
        ):
            assert f'`"{key}"`' in doc


class TestDrivers:
    """`apply` and `stateless_apply` are thin drivers of one pure step: they agree."""

    def _setup(self, policy):
        v1 = keras.Variable(np.array([[1.0, -2.0], [0.5, 3.0]], "float32"), name="a")
        v2 = keras.Variable(np.array([0.1, 0.2, 0.3], "float32"), name="b")
        opt = ClippedOptimizer(keras.optimizers.Adam(0.1), policy, record_gradients=True)
        opt.build([v1, v2])
        return opt, [v1, v2]

    @pytest.mark.skipif(
        BACKEND == "tensorflow", reason="Keras has no stateless_apply on TensorFlow"
    )
    @pytest.mark.parametrize("nan", [False, True], ids=["finite", "nan"])
    def test_apply_equals_stateless_apply(self, nan):
        policy = lambda: clipping.chain(clipping.SkipNonFinite(), clipping.AutoClip(50.0, 4))
        steps = [
            [np.array([[3.0, 0.0], [0.0, 4.0]], "float32"), np.array([0.0, 1.0, 12.0], "float32")],
            [
                np.array([[1.0, 2.0], [0.0, -4.0]], "float32"),
                np.array([np.nan if nan else 2.0, 1.0, 0.0], "float32"),
            ],
            [np.array([[0.5, 0.0], [1.0, 1.0]], "float32"), np.array([0.0, -1.0, 3.0], "float32")],
        ]
        stateful, sv = self._setup(policy())
        stateless, lv = self._setup(policy())
        for grads in steps:
            stateful.apply(grads, sv)
            new_vars, new_opt = stateless.stateless_apply(
                [v.value for v in stateless.variables], grads, [v.value for v in lv]
            )
            for v, value in zip(lv + stateless.variables, list(new_vars) + list(new_opt)):
                v.assign(value)
        for a, b in zip(sv + stateful.variables, lv + stateless.variables):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path
            )
        stats = stateless.gradient_statistics()
        assert (stats["steps"], stats["skipped_steps"]) == (3.0, 1.0 if nan else 0.0)
        assert int(keras.ops.convert_to_numpy(stateless.iterations)) == (2 if nan else 3)

    def test_stateless_apply_under_jit_skips_non_finite(self):
        if BACKEND != "jax":
            pytest.skip("stateless_apply under jit is the JAX trainer's path")
        opt, variables = self._setup(clipping.SkipNonFinite())
        before = [
            keras.ops.convert_to_numpy(v)
            for v in variables + opt.variables
            if "clipped_optimizer" not in v.path
        ]
        grads = [np.full((2, 2), np.nan, "float32"), np.ones(3, "float32")]
        _compiled_apply(opt, grads, variables, jit=True)
        after = [
            keras.ops.convert_to_numpy(v)
            for v in variables + opt.variables
            if "clipped_optimizer" not in v.path
        ]
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
        assert opt.gradient_statistics()["skipped_steps"] == 1.0

    def test_stateless_apply_on_tensorflow_says_to_use_apply(self):
        if BACKEND != "tensorflow":
            pytest.skip("the TensorFlow backend's rule")
        opt, variables = self._setup(clipping.NoClip())
        with pytest.raises(ValueError, match="Use `apply`"):
            opt.stateless_apply(
                [v.value for v in opt.variables],
                [np.ones((2, 2), "float32"), np.ones(3, "float32")],
                [v.value for v in variables],
            )

    def test_private_keras_attributes_still_mean_what_we_read(self):
        # `_UpdateView` reads these; if Keras renames or changes them, this fails first.
        v = keras.Variable(np.zeros(2, "float32"), name="w")
        inner = keras.optimizers.SGD(1.0, gradient_accumulation_steps=2)
        inner.build([v])
        assert len(inner._accumulated_gradients) == 1
        assert inner._get_variable_index(v) == 0
        inner.apply([keras.ops.ones((2,))], [v])
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(inner._accumulated_gradients[0]), [1.0, 1.0]
        )
        # `_iterations` counts micro-steps; the public `iterations` counts updates.
        assert int(keras.ops.convert_to_numpy(inner._iterations)) == 1
        assert int(keras.ops.convert_to_numpy(inner.iterations)) == 0
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), [0.0, 0.0])


class TestPolicyInputs:
    def test_numpy_gradients_and_numpy_thresholds(self):
        # NumPy gradients on every backend; NumPy scalar thresholds stored as Python floats.
        policy = clipping.ClipByGlobalNorm(np.float64(2.0))
        assert type(policy.max_norm) is float
        out = policy([np.array([3.0, 0.0], "float32"), np.array([4.0], "float32")])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out[0]), [1.2, 0.0], rtol=1e-6)
        assert type(clipping.AutoClip(np.float32(10.0)).percentile) is float
        v = keras.Variable(np.ones((2, 2), "float32"))
        out = clipping.AdaptiveClip(np.float64(0.01))([np.full((2, 2), 5.0, "float32")], [v])
        assert np.all(np.abs(keras.ops.convert_to_numpy(out[0])) < 5.0)
        opt = ClippedOptimizer(
            keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(np.float64(2.0))
        )
        w = keras.Variable(np.zeros(2, "float32"))
        opt.apply([np.array([3.0, 4.0], "float32")], [w])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w), [-0.12, -0.16], rtol=1e-5)


@pytest.mark.parametrize("built_first", [False, True])
def test_enable_gradient_recording_before_or_after_build(built_first):
    # GradientBoard switches recording on at the start of fit, which may come
    # before the optimizer is built (a model compiled with a ClippedOptimizer).
    var = keras.Variable(np.array([1.0, -2.0], "float32"), name="w")
    optimizer = ClippedOptimizer(keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(1.0))
    if built_first:
        optimizer.build([var])
    optimizer.enable_gradient_recording()
    optimizer.apply([keras.ops.convert_to_tensor(np.array([3.0, 4.0], "float32"))], [var])
    (gradient,) = optimizer.last_gradients().values()
    np.testing.assert_allclose(gradient, [0.6, 0.8], rtol=1e-6)
    assert (
        "record_gradients" in optimizer.get_config()
        and not optimizer.get_config()["record_gradients"]
    )
