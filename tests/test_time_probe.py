"""The time probe of `GradientBoard`: per-step gradient norms checked against
a NumPy backward pass and the backend's own gradient, the probe's
validation, and a soak test (one trace, no growing memory)."""

import gc

import keras
import numpy as np
import pytest

from keras_gradkit.callbacks import _time_probe as _time_plot
from keras_gradkit.callbacks._time_probe import validate_time_probe
from keras_gradkit.diagnostics import time_probe as _time_probe
from tests.gradient_testing import value_and_gradients

BACKEND = keras.backend.backend()
TRACED = BACKEND in ("tensorflow", "jax")


# ----------------------------------------------------------------- helpers
def numpy_simple_rnn_input_gradients(s, mask, rnn_weights, head_weights, y):
    """d loss_i / d s_{i,t} for SimpleRNN(tanh, last output) -> Dense -> MSE,
    with Keras's masking (a masked step carries the state over)."""
    kernel, recurrent, bias = rnn_weights
    head_kernel, head_bias = head_weights
    batch, steps, _ = s.shape
    mask = np.ones((batch, steps), bool) if mask is None else mask
    h = np.zeros((batch, steps + 1, kernel.shape[1]))
    for t in range(steps):
        new = np.tanh(s[:, t] @ kernel + h[:, t] @ recurrent + bias)
        h[:, t + 1] = np.where(mask[:, t : t + 1], new, h[:, t])
    y_pred = h[:, -1] @ head_kernel + head_bias
    dh = (2.0 * (y_pred - y) / y.shape[1]) @ head_kernel.T  # per-example MSE
    ds = np.zeros(s.shape)
    for t in reversed(range(steps)):
        da = dh * (1.0 - h[:, t + 1] ** 2)
        ds[:, t] = np.where(mask[:, t : t + 1], da @ kernel.T, 0.0)
        dh = np.where(mask[:, t : t + 1], da @ recurrent.T, dh)
    return ds


def step_norms(grad, mask=None):
    """mean over the unmasked examples of ||grad_{i,t}||; NaN where none is."""
    norms = np.linalg.norm(grad, axis=-1)
    mask = np.ones(norms.shape, bool) if mask is None else mask
    with np.errstate(invalid="ignore"):
        return np.where(mask, norms, 0.0).sum(0) / mask.sum(0)


def aligned_step_norms(grad, mask):
    """Each sequence's unmasked steps, its last one at the last position:
    entry T-1-d is the mean over the sequences with more than d unmasked
    steps of ||grad|| at their d-th unmasked step back; NaN where none has."""
    batch, steps = mask.shape
    columns = [[] for _ in range(steps)]
    for i in range(batch):
        own = [np.linalg.norm(grad[i, t]) for t in range(steps) if mask[i, t]]
        for d, value in enumerate(reversed(own)):
            columns[steps - 1 - d].append(value)
    return np.array([np.mean(c) if c else np.nan for c in columns])


def numpy_reach(norms, fraction=1e-3):
    """Steps back from the last before the first that is zero or below
    `fraction` times the largest finite step at it or after it."""
    norms = norms[~np.isnan(norms)]
    count, largest = 0, 0.0
    for value in norms[::-1]:
        largest = max(largest, value) if np.isfinite(value) else largest
        if value <= 0 or value < fraction * largest:
            break
        count += 1
    return count


def float_model(steps=10, features=2):
    inputs = keras.Input((steps, features))
    s = keras.layers.Dense(3, name="proj")(inputs)
    h = keras.layers.SimpleRNN(4, name="rnn")(s)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def float_reference(model, x, y):
    """(input norms, rnn norms) from the NumPy backward pass."""
    kernel, bias = model.get_layer("proj").get_weights()
    s = x @ kernel + bias
    ds = numpy_simple_rnn_input_gradients(
        s, None, model.get_layer("rnn").get_weights(), model.get_layer("head").get_weights(), y
    )
    return step_norms(ds @ kernel.T), step_norms(ds)


def token_model(recurrent="simple_rnn"):
    layer = (
        keras.layers.SimpleRNN(4, name="rnn")
        if recurrent == "simple_rnn"
        else keras.layers.LSTM(4, name="rnn")
    )
    model = keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            keras.layers.Embedding(6, 3, mask_zero=True, name="embedding"),
            layer,
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def tokens(rng):
    """Pre-padded ids, steps 0 and 1 masked everywhere, lengths differing."""
    ids = rng.integers(1, 6, size=(4, 7))
    ids[:, :2] = 0
    ids[1, :4] = 0
    ids[2, :6] = 0
    return ids.astype("int32")


def probe(model, x, y):
    result = _time_probe.TimeProbe(model, *validate_time_probe((x, y)))
    result.check()
    return result


def by_name(results):
    assert all(isinstance(name, str) and isinstance(r, int) for name, _, r in results)
    assert all(n.dtype == np.float64 and n.ndim == 1 for _, n, _ in results)
    return {name: (norms, r) for name, norms, r in results}


def state(model):
    return [
        np.array(keras.ops.convert_to_numpy(v.value))
        for v in model.variables + model.metrics_variables
    ]


def resident_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


# ------------------------------------------------------------------- tests
class TestTimeProbe:
    def test_float_probe_matches_numpy(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(3, 10, 2)).astype("float32")
        y = rng.normal(size=(3, 2)).astype("float32")
        model = float_model()
        results = by_name(probe(model, x, y).compute())
        assert list(results) == ["input", "rnn"]
        for (norms, r), expected in zip(results.values(), float_reference(model, x, y)):
            np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9)
            assert r == numpy_reach(expected)

    def test_token_probe_matches_numpy_over_unmasked_steps(self):
        rng = np.random.default_rng(2)
        ids = tokens(rng)
        y = rng.normal(size=(4, 2)).astype("float32")
        model = token_model()
        results = by_name(probe(model, ids, y).compute())
        assert list(results) == ["input", "rnn"]  # "input" is the embedding's output
        mask = ids != 0
        s = model.get_layer("embedding").get_weights()[0][ids]
        ds = numpy_simple_rnn_input_gradients(
            s, mask, model.get_layer("rnn").get_weights(), model.get_layer("head").get_weights(), y
        )
        expected = step_norms(ds, mask)
        for norms, r in results.values():
            np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9)
            assert np.isnan(norms[:2]).all() and not np.isnan(norms[2:]).any()
            assert r == numpy_reach(expected) and 0 < r <= 5

    def test_token_probe_with_lstm_matches_backend_gradient(self):
        rng = np.random.default_rng(3)
        ids = tokens(rng)[:, ::-1].copy()  # post-padded: the last two steps are masked everywhere
        y = rng.normal(size=(4, 2)).astype("float32")
        model = token_model("lstm")
        results = by_name(probe(model, ids, y).compute())
        embedding, lstm, head = (model.get_layer(n) for n in ("embedding", "rnn", "head"))
        mask = ids != 0
        s = keras.ops.convert_to_numpy(embedding(ids))

        def loss(seq):
            y_pred = head(lstm(seq, mask=keras.ops.convert_to_tensor(mask)))
            return keras.ops.sum(
                keras.ops.mean(keras.ops.square(keras.ops.subtract(y_pred, y)), axis=-1)
            )

        _, (grad,), _ = value_and_gradients(loss, [s])
        # Each sequence aligned at its last unmasked step: the two steps no
        # sequence reaches come first.
        expected = aligned_step_norms(grad, mask)
        norms, r = results["input"]
        np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9)
        assert np.isnan(norms[:2]).all()
        assert r == numpy_reach(expected)  # counted back from the last unmasked step

    def test_subclassed_model_probes_its_input(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.rnn = keras.layers.SimpleRNN(3)
                self.head = keras.layers.Dense(1)

            def call(self, x, training=False):
                return self.head(self.rnn(x))

        rng = np.random.default_rng(4)
        x = rng.normal(size=(2, 5, 2)).astype("float32")
        y = rng.normal(size=(2, 1)).astype("float32")
        model = Net()
        model.compile(optimizer="sgd", loss="mse")
        model(x)
        results = by_name(probe(model, x, y).compute())
        _, (grad,), _ = value_and_gradients(
            lambda a: keras.ops.sum(keras.ops.square(keras.ops.subtract(model(a), y))), [x]
        )
        assert list(results) == ["input"]
        np.testing.assert_allclose(results["input"][0], step_norms(grad), rtol=1e-4, atol=1e-9)

    def test_multi_output_model_sums_its_losses(self):
        rng = np.random.default_rng(8)
        x = rng.normal(size=(2, 5, 2)).astype("float32")
        y = {
            "a": rng.normal(size=(2, 1)).astype("float32"),
            "b": rng.normal(size=(2, 2)).astype("float32"),
        }
        inputs = keras.Input((5, 2))
        h = keras.layers.SimpleRNN(3, name="rnn")(inputs)
        outputs = {"a": keras.layers.Dense(1, name="a")(h), "b": keras.layers.Dense(2, name="b")(h)}
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss={"a": "mse", "b": "mae"})
        results = by_name(probe(model, x, y).compute())

        def loss(a):
            out = model(a)
            mse = keras.ops.mean(keras.ops.square(keras.ops.subtract(out["a"], y["a"])), axis=-1)
            mae = keras.ops.mean(keras.ops.abs(keras.ops.subtract(out["b"], y["b"])), axis=-1)
            return keras.ops.sum(mse + mae)

        _, (grad,), _ = value_and_gradients(loss, [x])
        for name in ("input", "rnn"):
            np.testing.assert_allclose(results[name][0], step_norms(grad), rtol=1e-4, atol=1e-9)

    def test_masking_layer_excludes_masked_steps(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(2, 6, 2)).astype("float32")
        x[:, -2:] = -9.0  # post-padding
        y = rng.normal(size=(2, 1)).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((6, 2)),
                keras.layers.Masking(-9.0),
                keras.layers.SimpleRNN(3, name="rnn"),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse")
        for name, norms, r in probe(model, x, y).compute():
            # Post-padded, aligned at the last unmasked step: the masked
            # steps come first.
            assert np.isnan(norms[:2]).all() and (norms[2:] > 0).all(), name
            assert r == numpy_reach(norms) and r > 0

    def test_check_and_compute_change_no_variable(self):
        rng = np.random.default_rng(6)
        x = rng.normal(size=(3, 5, 2)).astype("float32")
        y = rng.normal(size=(3, 1)).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((5, 2)),
                keras.layers.BatchNormalization(),
                keras.layers.Dropout(0.5),
                keras.layers.LSTM(3, dropout=0.2),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
        model.evaluate(x, y, verbose=0)  # builds the metrics
        before = state(model)
        time_probe = probe(model, x, y)
        for _ in range(2):
            time_probe.compute()
        for old, new in zip(before, state(model)):
            np.testing.assert_array_equal(old, new)

    def test_results_follow_weights_with_one_trace_and_flat_memory(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(3, 10, 2)).astype("float32")
        y = rng.normal(size=(3, 2)).astype("float32")
        model = float_model()
        time_probe = probe(model, x, y)
        assert time_probe.trace_count == (1 if TRACED else 0)  # check() traced it
        weights = model.trainable_variables
        for call in range(31):
            for v in weights:
                v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
            results = by_name(time_probe.compute())
            if call == 0:
                traces = time_probe.trace_count
                assert traces == (1 if TRACED else 0)
            if call == 10:
                gc.collect()
                start = resident_mib()
        gc.collect()
        assert resident_mib() - start < 4.0
        assert time_probe.trace_count == traces
        for (norms, _), expected in zip(results.values(), float_reference(model, x, y)):
            np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9)

    def test_compiling_again_with_another_loss_is_followed(self):
        rng = np.random.default_rng(9)
        x = rng.normal(size=(2, 4, 2)).astype("float32")
        y = rng.normal(size=(2, 1)).astype("float32")
        model = keras.Sequential(
            [keras.Input((4, 2)), keras.layers.SimpleRNN(2), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        time_probe = probe(model, x, y)
        mse = time_probe.compute()[0][1]
        model.compile(optimizer="sgd", loss="mae")
        time_probe.check()  # as GradientBoard does at the next `fit`
        mae = time_probe.compute()[0][1]
        _, (grad,), _ = value_and_gradients(
            lambda a: keras.ops.sum(keras.ops.abs(keras.ops.subtract(model(a), y))), [x]
        )
        np.testing.assert_allclose(mae, step_norms(grad), rtol=1e-4, atol=1e-9)
        assert not np.allclose(mse, mae)

    # -------------------------------------------------------- validation
    @pytest.mark.parametrize(
        "x,message",
        [
            (np.zeros((2, 8, 8, 3), "float32"), r"shape=\(2, 8, 8, 3\) and dtype=float32"),
            (np.zeros((2, 8), "float32"), r"integer dtype.*shape=\(2, 8\) and dtype=float32"),
            (np.zeros((2, 8, 3), "int32"), r"shape=\(2, 8, 3\) and dtype=int32"),
            (np.zeros((2, 8, 3), bool), r"dtype=bool"),
            (np.zeros((0, 8, 3), "float32"), r"shape=\(0, 8, 3\)"),
        ],
        ids=["image", "float_matrix", "int_features", "bool", "empty"],
    )
    @pytest.mark.backend_free
    def test_validate_rejects_other_arrays(self, x, message):
        with pytest.raises(ValueError, match=rf"`time_probe`.*{message}"):
            validate_time_probe((x, np.zeros((len(x), 1))))

    @pytest.mark.backend_free
    def test_validate_rejects_wrong_types_and_targets(self):
        with pytest.raises(TypeError, match=r"`time_probe`.*ndarray with shape=\(2, 3, 1\)"):
            validate_time_probe(np.zeros((2, 3, 1)))
        with pytest.raises(TypeError, match="`time_probe`"):
            validate_time_probe((None, np.zeros((2, 1))))
        with pytest.raises(ValueError, match="Received: time_probe with 3 entries"):
            validate_time_probe((np.zeros((2, 3, 1)),) * 3)
        with pytest.raises(ValueError, match=r"`time_probe` must have as many targets.*\(3, 1\)"):
            validate_time_probe((np.zeros((2, 3, 1)), np.zeros((3, 1))))
        with pytest.raises(ValueError, match=r"as many targets"):
            validate_time_probe((np.zeros((2, 3, 1)), {"a": np.zeros((2, 1)), "b": np.zeros((3,))}))

    def test_validate_returns_numpy(self):
        assert validate_time_probe(None) is None
        x, y = validate_time_probe(([[1, 2], [3, 0]], keras.ops.ones((2, 1))))
        assert (
            isinstance(x, np.ndarray) and x.shape == (2, 2) and np.issubdtype(x.dtype, np.integer)
        )
        assert isinstance(y, np.ndarray) and y.shape == (2, 1)

    @pytest.mark.parametrize(
        "shape,message",
        [
            (
                (4, 10, 3),
                r"sequences of shape \(4, 10, 3\).*expects inputs of shape \(None, 10, 2\)",
            ),
            (
                (4, 12, 2),
                r"sequences of shape \(4, 12, 2\).*expects inputs of shape \(None, 10, 2\)",
            ),
        ],
        ids=["features", "length"],
    )
    def test_check_rejects_probe_the_model_cannot_take(self, shape, message):
        model = float_model(steps=10)
        before = state(model)
        time_probe = _time_probe.TimeProbe(
            model, np.zeros(shape, "float32"), np.zeros((4, 2), "float32")
        )
        with pytest.raises(ValueError, match=rf"`time_probe`.*{message}"):
            time_probe.check()
        for old, new in zip(before, state(model)):
            np.testing.assert_array_equal(old, new)

    def test_check_accepts_any_length_for_variable_length_models(self):
        model = keras.Sequential(
            [keras.Input((None, 2)), keras.layers.SimpleRNN(2, name="rnn"), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        results = probe(model, np.ones((2, 9, 2), "float32"), np.zeros((2, 1), "float32")).compute()
        assert [(name, norms.shape) for name, norms, _ in results] == [
            ("input", (9,)),
            ("rnn", (9,)),
        ]

    def test_check_rejects_tokens_without_embedding_and_sequences_for_tokens(self):
        model = keras.Sequential(
            [keras.Input((7,), dtype="int32"), keras.layers.Dense(2, name="dense")]
        )
        model.compile(optimizer="sgd", loss="mse")
        ids = np.ones((4, 7), "int32")
        with pytest.raises(
            ValueError, match=r"`time_probe` holds token ids of shape \(4, 7\).*Embedding.*`dense`"
        ):
            _time_probe.TimeProbe(model, ids, np.zeros((4, 2))).check()
        with pytest.raises(
            ValueError, match=r"`time_probe` holds sequences of shape \(4, 7, 3\).*\(None, 7\)"
        ):
            _time_probe.TimeProbe(
                token_model(), np.ones((4, 7, 3), "float32"), np.zeros((4, 2))
            ).check()

    def test_check_rejects_subclassed_misfits(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.flatten = keras.layers.Flatten()
                self.head = keras.layers.Dense(1)

            def call(self, x):
                return self.head(self.flatten(x))

        model = Net()
        model.compile(optimizer="sgd", loss="mse")
        model(np.zeros((1, 4, 2), "float32"))
        y = np.zeros((2, 1), "float32")
        with pytest.raises(
            ValueError,
            match=r"`time_probe` holds sequences of shape \(2, 5, 2\).*(cannot take|fails)",
        ):
            _time_probe.TimeProbe(model, np.zeros((2, 5, 2), "float32"), y).check()
        with pytest.raises(
            ValueError, match=r"`time_probe` holds token ids.*functional or Sequential"
        ):
            _time_probe.TimeProbe(model, np.zeros((2, 8), "int32"), y).check()

    def test_check_rejects_models_with_two_inputs(self):
        a, b = keras.Input((4, 2)), keras.Input((4, 2))
        model = keras.Model(
            [a, b], keras.layers.Dense(1)(keras.layers.SimpleRNN(2)(keras.layers.Add()([a, b])))
        )
        model.compile(optimizer="sgd", loss="mse")
        with pytest.raises(ValueError, match=r"`time_probe` holds sequences.*takes 2 inputs"):
            _time_probe.TimeProbe(model, np.zeros((2, 4, 2), "float32"), np.zeros((2, 1))).check()

    def test_check_rejects_targets_the_loss_cannot_take(self):
        x = np.zeros((2, 10, 2), "float32")
        with pytest.raises(
            ValueError, match=r"`time_probe`.*targets of shape \(2, 5\).*(cannot take|fails)"
        ):
            _time_probe.TimeProbe(float_model(), x, np.zeros((2, 5), "float32")).check()

    # -------------------------------------------------- reach and plot
    @pytest.mark.parametrize(
        "norms,expected",
        [
            ([1.0, 1.0, 1.0], 3),
            ([1e-5, 1.0, 0.5], 2),
            ([np.nan, 1e-5, 1.0, np.nan], 1),
            ([np.nan, np.nan], 0),
            ([0.0, 0.0], 0),
        ],
    )
    @pytest.mark.backend_free
    def test_reach_skips_masked_steps(self, norms, expected):
        assert _time_probe.reach(np.array(norms)) == expected

    @pytest.mark.backend_free
    def test_plot_with_masked_steps(self):
        png, width, height = _time_plot.plot_png(
            np.array([np.nan, 1e-6, 0.0, 1.0, 0.5, np.nan]), "m: input"
        )
        assert png.startswith(b"\x89PNG") and width > 100 and height > 100
