"""GradientBoard: event files read back with TensorBoard's reader, checked
against gradients computed independently in NumPy."""

import json
import os
import warnings

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

import keras_gradkit as gk
from keras_gradkit import clipping
from keras_gradkit.diagnostics import time_probe as _time_probe
from keras_gradkit.optimizers import ClippedOptimizer
from tests.gradient_testing import value_and_gradients

BACKEND = keras.backend.backend()
JIT = pytest.mark.skipif(BACKEND == "torch", reason="no XLA on torch")
DEPTH_TAGS = {"gradient_depth", "gradient_depth/norms", "gradient_depth/first_to_last"}

VARIABLES = ("net/hidden/kernel", "net/hidden/bias", "net/out/kernel", "net/out/bias")


# ----------------------------------------------------------------- helpers
def read_events(log_dir, run="train"):
    """{tag: (plugin name, [(step, value), ...])} from the run's event files."""
    acc = pea.EventAccumulator(os.path.join(str(log_dir), run), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    events = {}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events[tag] = (
            plugin,
            [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)],
        )
    return events


def scalar(events, tag, index=-1):
    plugin, values = events[tag]
    assert plugin == "scalars", (tag, plugin)
    return float(values[index][1])


def steps(events, tag):
    return [s for s, _ in events[tag][1]]


def dense_model(seed=3, dtype=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden", dtype=dtype),
            keras.layers.Dense(2, name="out", dtype=dtype),
        ],
        name="net",
    )


def data(n=8, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype("float32"), (rng.normal(size=(n, 2)) * scale).astype(
        "float32"
    )


def numpy_dense_gradients(weights, x, y):
    """Backprop by hand through tanh(x W1 + b1) W2 + b2 with the Keras MSE
    (mean over outputs, then over the batch)."""
    w1, b1, w2, b2 = [np.asarray(w, "float64") for w in weights]
    x, y = np.asarray(x, "float64"), np.asarray(y, "float64")
    h = np.tanh(x @ w1 + b1)
    out = h @ w2 + b2
    d_out = 2.0 * (out - y) / out.size
    d_pre = (d_out @ w2.T) * (1.0 - h**2)
    return [x.T @ d_pre, d_pre.sum(0), h.T @ d_out, d_out.sum(0)]


def norm(grads):
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in grads)))


def assert_histogram_of(events, tag, values):
    plugin, entries = events[tag]
    assert plugin == "histograms"
    buckets = entries[-1][1]
    assert buckets.shape[1] == 3
    assert buckets[:, 2].sum() == pytest.approx(np.size(values))
    np.testing.assert_allclose(buckets[0, 0], np.min(values), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(buckets[-1, 1], np.max(values), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------- tests
class TestGradientBoard:
    def test_histograms_and_scalars_match_numpy(self, tmp_path):
        x, y = data()
        model = dense_model()
        w0 = [w.copy() for w in model.get_weights()]
        lr = 0.1
        sgd = keras.optimizers.SGD(lr)
        model.compile(optimizer=sgd, loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[board])
        grads = numpy_dense_gradients(w0, x, y)
        events = read_events(tmp_path)
        expected_tags = {
            "gradient_norm/global",
            "gradient_norm/global_clipped",
            "clipping/skipped_steps",
        }
        expected_tags |= {"clipping/clipped_fraction", "diagnosis"} | DEPTH_TAGS
        for path in VARIABLES:
            expected_tags |= {f"gradients/{path}", f"gradient_norm/{path}", f"update_ratio/{path}"}
        # NoClip has no threshold: clipping/threshold is not written (it would be NaN).
        assert set(events) == expected_tags
        assert all(steps(events, tag) == [0] for tag in events)  # epoch 0, as Keras's epoch_loss
        assert scalar(events, "gradient_norm/global") == pytest.approx(norm(grads), rel=1e-5)
        assert scalar(events, "gradient_norm/global_clipped") == pytest.approx(
            norm(grads), rel=1e-5
        )
        assert scalar(events, "clipping/clipped_fraction") == 0.0
        assert scalar(events, "clipping/skipped_steps") == 0.0
        for path, g, w in zip(VARIABLES, grads, w0):
            assert scalar(events, f"gradient_norm/{path}") == pytest.approx(
                np.linalg.norm(g), rel=1e-5
            )
            assert_histogram_of(events, f"gradients/{path}", g)
            ratio = lr * np.linalg.norm(g) / np.linalg.norm(w - lr * g)
            assert scalar(events, f"update_ratio/{path}") == pytest.approx(ratio, rel=1e-4)
        depth = events["gradient_depth/norms"][1][-1][1]
        np.testing.assert_allclose(depth, [norm(grads[:2]), norm(grads[2:])], rtol=1e-5)
        ratio = norm(grads[:2]) / norm(grads[2:])
        assert scalar(events, "gradient_depth/first_to_last") == pytest.approx(ratio, rel=1e-5)
        assert model.optimizer is sgd  # the user's optimizer throughout
        stats = board.gradient_statistics()  # the same numbers, with ClippedOptimizer's keys
        reference = ClippedOptimizer(keras.optimizers.SGD(lr), clipping.NoClip())
        reference.build(model.trainable_variables)
        assert set(stats) == set(reference.gradient_statistics())
        assert stats["global_norm"] == pytest.approx(norm(grads), rel=1e-5)
        assert stats["steps"] == 1.0 and stats["skipped_steps"] == 0.0
        for path, g in zip(VARIABLES, grads):
            assert stats[f"gradient_norm/{path}"] == pytest.approx(np.linalg.norm(g), rel=1e-5)

    @pytest.mark.parametrize(
        "jit,steps_per_execution,accumulation",
        [
            pytest.param(True, 1, None, marks=JIT),
            pytest.param(
                False,
                2,
                None,
                marks=pytest.mark.skipif(BACKEND == "torch", reason="one step at a time"),
            ),
            (False, 1, 2),
        ],
        ids=["jit", "steps_per_execution", "gradient_accumulation"],
    )
    def test_training_modes_log_the_applied_gradient(
        self, tmp_path, jit, steps_per_execution, accumulation
    ):
        x, y = data(n=8)
        model = dense_model()
        w0 = [w.copy() for w in model.get_weights()]
        lr = 0.1
        model.compile(
            optimizer=keras.optimizers.SGD(lr, gradient_accumulation_steps=accumulation),
            loss="mse",
            jit_compile=jit,
            steps_per_execution=steps_per_execution,
        )
        board = gk.callbacks.GradientBoard(tmp_path, update_freq="batch", diagnose=False)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[board])
        g1 = numpy_dense_gradients(w0, x[:4], y[:4])
        if accumulation:  # one update with the mean of the two micro-batch gradients
            g2 = numpy_dense_gradients(w0, x[4:], y[4:])
            applied = [(a + b) / 2 for a, b in zip(g1, g2)]
        else:  # the callback sees the latest of two SGD steps
            w1 = [w - lr * g for w, g in zip(w0, g1)]
            applied = numpy_dense_gradients(w1, x[4:], y[4:])
        events = read_events(tmp_path)
        assert scalar(events, "gradient_norm/global") == pytest.approx(norm(applied), rel=1e-5)
        assert_histogram_of(events, "gradients/net/hidden/kernel", applied[0])
        # Keras counts updates only (2 steps, or 1 accumulated update).
        iterations = 1 if accumulation else 2
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations
        assert steps(events, "gradient_norm/global")[-1] == iterations
        assert steps(events, "gradients/net/hidden/kernel") == [0]
        expected_writes = 1 if steps_per_execution == 2 else 2
        if accumulation:  # the micro-step writes nothing: no update has happened yet
            expected_writes = 1
        assert len(steps(events, "gradient_norm/global")) == expected_writes

    def test_mixed_precision_logs_unscaled_gradients(self, tmp_path):
        keras.config.set_dtype_policy("mixed_float16")
        x, y = data()
        model = dense_model()
        w0 = [w.copy() for w in model.get_weights()]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path)],
        )
        grads = numpy_dense_gradients(w0, x, y)
        events = read_events(tmp_path)
        assert scalar(events, "gradient_norm/global") == pytest.approx(norm(grads), rel=2e-2)
        buckets = events["gradients/net/out/kernel"][1][-1][1]
        np.testing.assert_allclose(buckets[-1, 1], grads[2].max(), rtol=2e-2)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # given back

    def test_clipping_scalars_match_policy(self, tmp_path):
        x, y = data(scale=20.0)
        x[5, 0] = np.nan  # the second batch is skipped by SkipNonFinite
        model = dense_model()
        w0 = [w.copy() for w in model.get_weights()]
        opt = ClippedOptimizer(
            keras.optimizers.SGD(0.1),
            clipping.chain(clipping.SkipNonFinite(), clipping.ClipByGlobalNorm(0.05)),
            record_gradients=True,
        )
        model.compile(optimizer=opt, loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path, diagnose=False)
        model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0, callbacks=[board])
        model.fit(
            x,
            y,
            batch_size=4,
            initial_epoch=1,
            epochs=2,
            verbose=0,
            shuffle=False,
            callbacks=[board],
        )
        events = read_events(tmp_path)
        g = numpy_dense_gradients(w0, x[:4], y[:4])
        assert steps(events, "gradient_norm/global")[0] == 0
        first = {tag: float(v[0][1]) for tag, (p, v) in events.items() if p == "scalars"}
        assert first["gradient_norm/global"] == pytest.approx(norm(g), rel=1e-5)
        assert first["gradient_norm/global_clipped"] == pytest.approx(0.05, rel=1e-5)
        assert first["clipping/threshold"] == pytest.approx(0.05)
        assert first["clipping/clipped_fraction"] == 1.0
        assert_histogram_of(
            {
                "h": (
                    events["gradients/net/hidden/kernel"][0],
                    events["gradients/net/hidden/kernel"][1][:1],
                )
            },
            "h",
            g[0] * 0.05 / norm(g),
        )
        # Second fit: one clipped update, then a skipped one (NaN batch).
        assert scalar(events, "clipping/skipped_steps") == 1.0
        assert scalar(events, "clipping/clipped_fraction") == pytest.approx(0.5)
        assert steps(events, "clipping/skipped_steps") == [0, 1]
        # The NaN gradient of the skipped step is reported, not dropped.
        assert np.isnan(scalar(events, "gradient_norm/global"))
        assert steps(events, "gradient_norm/global") == [0, 1]

    def test_plain_optimizer_keeps_keras_clipnorm_and_stays_the_users(self, tmp_path):
        x, y = data(n=16, scale=20.0)
        reference = dense_model()
        reference.compile(optimizer=keras.optimizers.Adam(0.05, clipnorm=0.01), loss="mse")
        reference.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
        model = dense_model()
        user_optimizer = keras.optimizers.Adam(0.05, clipnorm=0.01)
        model.compile(optimizer=user_optimizer, loss="mse")
        # A first fit without the callback: Adam's slots carry on through the monitored fits.
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        board = gk.callbacks.GradientBoard(tmp_path, histogram_freq=0)
        model.fit(
            x,
            y,
            batch_size=4,
            initial_epoch=1,
            epochs=2,
            verbose=0,
            shuffle=False,
            callbacks=[board],
        )
        assert model.optimizer is user_optimizer
        model.fit(
            x,
            y,
            batch_size=4,
            initial_epoch=2,
            epochs=3,
            verbose=0,
            shuffle=False,
            callbacks=[board],
        )
        assert model.optimizer is user_optimizer
        assert int(keras.ops.convert_to_numpy(user_optimizer.iterations)) == 12
        for a, b in zip(model.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-6)
        for a, b in zip(user_optimizer.variables, reference.optimizer.variables):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6
            )
        events = read_events(tmp_path)
        assert scalar(events, "clipping/threshold") == pytest.approx(0.01)
        assert steps(events, "clipping/threshold") == [1, 2]
        assert not any(tag.startswith("gradients/") for tag in events)  # histogram_freq=0

    def test_batch_steps_are_the_update_count_and_a_recompiled_optimizer_continues(self, tmp_path):
        x, y = data(n=8)
        model = dense_model()
        model.compile(optimizer="sgd", loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path, update_freq=2, histogram_freq=0)
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[board])  # iterations 1..4
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[board])  # 5..8
        # A new optimizer whose count restarts at 0: its steps continue after 8.
        model.compile(optimizer="sgd", loss="mse")
        model.fit(
            x, y, batch_size=4, epochs=2, verbose=0, callbacks=[board]
        )  # 1..4, written at 10, 12
        assert steps(read_events(tmp_path), "gradient_norm/global") == [2, 4, 6, 8, 10, 12]

    def test_include_and_exclude_filter_variable_paths(self, tmp_path):
        x, y = data()
        model = dense_model()
        model.compile(optimizer="sgd", loss="mse")
        board = gk.callbacks.GradientBoard(
            tmp_path, include="kernel", exclude=["/out/"], diagnose=False
        )
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[board])
        per_variable = {
            t
            for t in read_events(tmp_path)
            if t.split("/")[0] in ("gradients", "gradient_norm", "update_ratio")
        }
        assert per_variable == {
            "gradients/net/hidden/kernel",
            "gradient_norm/net/hidden/kernel",
            "update_ratio/net/hidden/kernel",
            "gradient_norm/global",
            "gradient_norm/global_clipped",
        }

    def test_unwritable_log_dir_is_an_error_before_training(self, tmp_path):
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        x, y = data()
        model = dense_model()
        model.compile(optimizer="sgd", loss="mse")
        model.build((None, 3))
        before = model.get_weights()
        with pytest.raises(ValueError, match="log_dir"):
            model.fit(
                x, y, verbose=0, callbacks=[gk.callbacks.GradientBoard(str(blocker / "logs"))]
            )
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_histograms_switch_on_gradient_copies_without_changing_what_is_saved(self, tmp_path):
        x, y = data()
        model = dense_model()
        opt = ClippedOptimizer(keras.optimizers.SGD(), clipping.NoClip())
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, verbose=0)  # traced and built without gradient copies
        saved_before = [v.path for v in opt.variables]
        seen = {}  # what the copies hold during fit (a callback after the board reads them)
        read = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.update(opt.last_gradients())
        )
        model.fit(
            x, y, verbose=0, callbacks=[gk.callbacks.GradientBoard(tmp_path, diagnose=False), read]
        )
        events = read_events(tmp_path)
        assert_histogram_of(events, "gradients/net/out/kernel", seen["net/out/kernel"])
        assert opt.get_config()["record_gradients"] is False
        # The switch is undone after fit: the optimizer keeps no copies again.
        assert not opt.records_gradients
        with pytest.raises(ValueError, match="record_gradients"):
            opt.last_gradients()
        assert [v.path for v in opt.variables] == saved_before
        path = os.path.join(str(tmp_path), "m.keras")
        model.save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reloaded = keras.saving.load_model(path)
        assert int(keras.ops.convert_to_numpy(reloaded.optimizer.iterations)) == 2

    def test_write_statistics_from_a_custom_loop(self, tmp_path):
        x, y = data()
        model = dense_model()
        w0 = [w.copy() for w in model.get_weights()]
        grads0 = numpy_dense_gradients(w0, x, y)
        max_norm = 0.5 * norm(grads0)  # the first step is clipped
        opt = ClippedOptimizer(
            keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(max_norm), record_gradients=True
        )
        board = gk.callbacks.GradientBoard(tmp_path, diagnose=False)
        expected = []
        for step in range(1, 4):
            weights = [w.copy() for w in model.get_weights()]
            expected.append(norm(numpy_dense_gradients(weights, x, y)))
            loss = lambda: keras.losses.MeanSquaredError()(y, model(x))
            _, _, grads = value_and_gradients(loss, variables=model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            board.write_statistics(opt, opt.iterations, histograms=step == 3)
        board.write_statistics(opt, 2)  # a step already written is ignored
        events = read_events(tmp_path)
        assert steps(events, "gradient_norm/global") == [1, 2, 3]
        np.testing.assert_allclose(
            [float(v) for _, v in events["gradient_norm/global"][1]], expected, rtol=1e-5
        )
        assert scalar(events, "clipping/threshold", 0) == pytest.approx(max_norm)
        assert scalar(events, "gradient_norm/global_clipped", 0) == pytest.approx(
            max_norm, rel=1e-5
        )
        assert scalar(events, "clipping/clipped_fraction", 0) == 1.0
        assert steps(events, "gradients/net/hidden/kernel") == [3]
        assert {f"update_ratio/{path}" for path in VARIABLES} <= set(events)
        # A restarted loop on the same log_dir continues after step 3.
        restarted = gk.callbacks.GradientBoard(tmp_path, diagnose=False)
        restarted.write_statistics(opt, 1)
        assert steps(read_events(tmp_path), "gradient_norm/global") == [1, 2, 3, 4]

    def test_write_statistics_rejects_bad_arguments(self, tmp_path):
        board = gk.callbacks.GradientBoard(tmp_path, diagnose=False)
        plain = ClippedOptimizer(keras.optimizers.SGD(), clipping.NoClip())
        with pytest.raises(TypeError, match="optimizer"):
            board.write_statistics(keras.optimizers.SGD(), 1)
        with pytest.raises(ValueError, match="step"):
            board.write_statistics(plain, -1)
        with pytest.raises(ValueError, match="record_gradients"):
            board.write_statistics(plain, 1, histograms=True)

    @pytest.mark.parametrize(
        "kwargs,argument,error",
        [
            ({"log_dir": ""}, "log_dir", ValueError),
            ({"log_dir": 3}, "log_dir", TypeError),
            ({"histogram_freq": -1}, "histogram_freq", ValueError),
            ({"histogram_freq": 1.5}, "histogram_freq", TypeError),
            ({"update_freq": 0}, "update_freq", ValueError),
            ({"update_freq": 2.0}, "update_freq", TypeError),
            ({"update_freq": True}, "update_freq", TypeError),
            ({"update_freq": "step"}, "update_freq", ValueError),
            ({"include": "("}, "include", ValueError),
            ({"exclude": 3}, "exclude", TypeError),
            ({"exclude": ["kernel", None]}, "exclude", TypeError),
            ({"time_probe": np.zeros((2, 3, 1))}, "time_probe", TypeError),
            ({"time_probe": (np.zeros((2, 3)), np.zeros((2, 1)))}, "time_probe", ValueError),
            ({"time_probe": (np.zeros((2, 3, 1)), np.zeros((3, 1)))}, "time_probe", ValueError),
            ({"write_plots": 1}, "write_plots", TypeError),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_arguments(self, kwargs, argument, error):
        """A wrong type is a TypeError, a wrong value of the right type a ValueError."""
        kwargs = {"log_dir": "runs/x", **kwargs}
        with pytest.raises(error, match=argument) as info:
            gk.callbacks.GradientBoard(**kwargs)
        assert type(info.value) is error

    @pytest.mark.backend_free
    def test_config(self):
        # The docstring against the signature: tests/test_docstrings.py.
        import inspect

        board = gk.callbacks.GradientBoard("runs/x", update_freq=3, include=["kernel"])
        config = board.get_config()
        assert set(config) == set(inspect.signature(gk.callbacks.GradientBoard).parameters)
        assert gk.callbacks.GradientBoard(**config).get_config() == config
        # A probe batch is kept as JSON-safe nested lists, read back as arrays.
        x = np.arange(12, dtype="float32").reshape(2, 3, 2) / 7
        y = np.array([1, 0])
        config = gk.callbacks.GradientBoard("runs/x", time_probe=(x, y)).get_config()
        assert json.loads(json.dumps(config)) == config
        x_back, y_back = gk.callbacks.GradientBoard(**config).time_probe
        np.testing.assert_allclose(x_back, x, rtol=1e-7)
        np.testing.assert_array_equal(y_back, y)
        assert (
            keras.saving.get_registered_name(gk.callbacks.GradientBoard)
            == "keras_gradkit>GradientBoard"
        )


# --------------------------------------------------------------- time probe
def numpy_rnn_time_gradients(proj, cell, head, x, y):
    """n_t = mean_i |d loss_i / d s_{i,t}| for the input `x` and for the RNN's
    input `s = x Wp + bp`, with h_t = tanh(s_t Wx + h_{t-1} Wh + b),
    out = h_T Wd + bd and loss_i = mean_j (out_ij - y_ij)^2."""
    (wp, bp), (wx, wh, b), (wd, bd) = [
        [np.asarray(w, "float64") for w in ws] for ws in (proj, cell, head)
    ]
    s = x.astype("float64") @ wp + bp
    hs = [np.zeros((x.shape[0], wh.shape[0]))]
    for t in range(x.shape[1]):
        hs.append(np.tanh(s[:, t] @ wx + hs[-1] @ wh + b))
    out = hs[-1] @ wd + bd
    dh = (2.0 * (out - y) / out.shape[1]) @ wd.T
    ds = np.zeros_like(s)
    for t in reversed(range(x.shape[1])):
        da = dh * (1.0 - hs[t + 1] ** 2)
        ds[:, t] = da @ wx.T
        dh = da @ wh.T
    dx = ds @ wp.T
    per_step = lambda g: np.linalg.norm(g, axis=-1).mean(0)
    return per_step(dx), per_step(ds)


def numpy_reach(norms):
    # Back from the last step, until a step is zero or below 1e-3 times the
    # largest step nearer the loss (an exploding gradient reaches every step).
    count, largest = 0, 0.0
    for value in norms[::-1]:
        largest = max(largest, value) if np.isfinite(value) else largest
        if value <= 0 or value < 1e-3 * largest:
            break
        count += 1
    return count


class TestTimeProbe:
    @pytest.mark.parametrize("masking", [False, True], ids=["plain", "after_masking"])
    def test_time_gradients_match_numpy(self, tmp_path, masking):
        # After Masking the RNN's inputs are [sequence, mask]: still probed.
        rng = np.random.default_rng(1)
        x = rng.normal(size=(3, 12, 2)).astype("float32")
        y = rng.normal(size=(3, 2)).astype("float32")
        inputs = keras.Input((12, 2))
        masked = (
            keras.layers.Masking(-99.0)(inputs) if masking else inputs
        )  # no step of x is masked
        s = keras.layers.Dense(3, name="proj")(masked)
        h = keras.layers.SimpleRNN(4, name="rnn")(s)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay as they are
        board = gk.callbacks.GradientBoard(tmp_path, time_probe=(x, y))
        model.fit(x, y, epochs=2, verbose=0, callbacks=[board])
        expected_input, expected_rnn = numpy_rnn_time_gradients(
            model.get_layer("proj").get_weights(),
            model.get_layer("rnn").get_weights(),
            model.get_layer("head").get_weights(),
            x,
            y,
        )
        events = read_events(tmp_path)
        for name, expected in (("input", expected_input), ("rnn", expected_rnn)):
            plugin, entries = events[f"time_gradient/{name}/norms"]
            assert [s for s, _ in entries] == [0, 1]
            np.testing.assert_allclose(entries[-1][1], expected, rtol=1e-4, atol=1e-9)
            reach_tag = "time_gradient/reach" if name == "input" else "time_gradient/rnn/reach"
            assert scalar(events, reach_tag) == numpy_reach(expected)
            plugin, images = events[f"time_gradient/{name}"]
            assert plugin == "images"
            width, height = images[-1][1][:2]
            assert int(width) > 100 and int(height) > 100
        # The gradient through a tanh RNN shrinks going back in time.
        assert expected_input[0] < expected_input[-1]

    def test_write_plots_false_writes_no_images_and_sequential_probe(self, tmp_path):
        rng = np.random.default_rng(2)
        x = rng.normal(size=(2, 6, 2)).astype("float32")
        y = rng.normal(size=(2, 1)).astype("float32")
        model = keras.Sequential(
            [keras.Input((6, 2)), keras.layers.LSTM(3, name="lstm"), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path, time_probe=(x, y), write_plots=False)
        model.fit(x, y, verbose=0, callbacks=[board])
        tags = {t for t in read_events(tmp_path) if t.startswith("time_gradient")}
        assert tags == {
            "time_gradient/input/norms",
            "time_gradient/reach",
            "time_gradient/lstm/norms",
            "time_gradient/lstm/reach",
        }

    @pytest.mark.parametrize(
        "norms,expected",
        [
            ([1.0, 1.0, 1.0], 3),
            ([1e-5, 1.0, 0.5], 2),
            ([1.0, 1e-4, 2e-3, 1.0], 2),
            ([0.0, 0.0], 0),
            ([3.0], 1),
        ],
    )
    @pytest.mark.backend_free
    def test_reach(self, norms, expected):
        assert _time_probe.reach(np.array(norms)) == expected
        if max(norms) > 0:
            assert numpy_reach(np.array(norms)) == expected
