"""The gradient doctor through time on masked sequences, its pictures of
gradients that cannot be plotted, and the errors of `diagnose` (issue 32).

Through time each sequence is aligned at its last unmasked step, so pre- and
post-padded copies of a batch give the same profile, and the summary (early,
late, peak, reach) comes from that one profile: checked against NumPy's
backward pass and the backend's own gradient. The reach tells an exploding
gradient (every step) from a vanished one (the last few). The pictures say in
words what cannot be plotted. Every error of `diagnose` is short and names
its argument."""

import io
import logging
import warnings

import keras
import numpy as np
import pytest

import keras_gradkit as gk
from keras_gradkit.callbacks import _plots
from keras_gradkit.callbacks import _time_probe as _time_plot
from keras_gradkit.diagnostics import batch, checks
from keras_gradkit.diagnostics import time_probe as _time_probe
from tests.gradient_testing import value_and_gradients
from tests.test_time_probe import (
    aligned_step_norms,
    numpy_reach,
    numpy_simple_rnn_input_gradients,
    probe,
    step_norms,
)

BACKEND = keras.backend.backend()
# Every message of `diagnose` is shorter than this.
MAX_MESSAGE = 500
VANISHING = 1e-3  # the default thresholds
EXPLODING = 100.0


# ----------------------------------------------------------------- helpers
def padded(sequences, steps, pre):
    """Token ids `(batch, steps)`, each sequence pre- or post-padded with 0."""
    ids = np.zeros((len(sequences), steps), "int32")
    for i, sequence in enumerate(sequences):
        if pre:
            ids[i, steps - len(sequence) :] = sequence
        else:
            ids[i, : len(sequence)] = sequence
    return ids


def token_model(steps, recurrent):
    model = keras.Sequential(
        [
            keras.Input((steps,), dtype="int32"),
            keras.layers.Embedding(6, 3, mask_zero=True, name="embedding"),
            recurrent,
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def vanishing_rnn():
    # Each step back multiplies the gradient by at most 0.05 (orthogonal
    # recurrent kernel of gain 0.05, tanh' <= 1).
    return keras.layers.SimpleRNN(
        4, recurrent_initializer=keras.initializers.Orthogonal(gain=0.05, seed=1), name="rnn"
    )


def numpy_summary(profile):
    """The documented summary of a profile, written out here."""
    profile = profile[~np.isnan(profile)]
    edge = max(1, int(0.1 * profile.size))
    return {
        "steps": profile.size,
        "early": profile[:edge].mean(),
        "late": profile[-edge:].mean(),
        "peak": profile.max(),
        "reach": numpy_reach(profile),
    }


def assert_same_summary(found, expected, rtol=1e-4):
    assert found["steps"] == expected["steps"] and found["reach"] == expected["reach"]
    for key in ("early", "late", "peak"):
        # float32 gradients: steps ~1e-30 of the peak carry no digits.
        atol = 1e-9 * expected["peak"]
        np.testing.assert_allclose(found[key], expected[key], rtol=rtol, atol=atol)


def by_name(results):
    return {name: (norms, r) for name, norms, r in results}


def input_gradient(model, x, y):
    """d sum_i loss_i / d x from the backend's own autodiff (per-example MSE)."""

    def loss(a):
        error = keras.ops.subtract(model(a), y)
        return keras.ops.sum(keras.ops.mean(keras.ops.square(error), axis=-1))

    return value_and_gradients(loss, [x])[1][0]


# ------------------------------------------------------------ through time
class TestAlignedTime:
    def test_post_padded_vanishing_gives_agreeing_ratio_and_reach(self):
        """Issue 32: on post-padded tokens the mean at absolute step t mixed
        a long sequence's far steps with short sequences' last steps."""
        steps = 24
        rng = np.random.default_rng(0)
        sequences = [rng.integers(1, 6, size=n) for n in (24, 3, 3, 3)]
        y = rng.normal(size=(4, 2)).astype("float32")
        model = token_model(steps, vanishing_rnn())
        table = model.get_layer("embedding").get_weights()[0]
        rnn, head = model.get_layer("rnn").get_weights(), model.get_layer("head").get_weights()
        found, time_probe = {}, probe(model, padded(sequences, steps, False), y)
        for pre in (False, True):
            ids = padded(sequences, steps, pre)
            mask = ids != 0
            ds = numpy_simple_rnn_input_gradients(table[ids], mask, rnn, head, y)
            expected = aligned_step_norms(ds, mask)
            time_probe.set_batch(ids, y)  # the same shapes: the trace is reused
            results = by_name(time_probe.compute())
            assert list(results) == ["input", "rnn"]
            for norms, r in results.values():
                np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9 * expected[-1])
                assert r == numpy_reach(expected)
            norms = results["rnn"][0]
            summary = _time_probe.summarize(norms)
            assert_same_summary(summary, numpy_summary(expected))
            assert checks.time_summary(norms) == summary
            found[pre] = norms, summary
            if not pre:
                # What the probe measured before: the mean at absolute steps.
                before = numpy_summary(step_norms(ds, mask))
                assert before["early"] / before["peak"] > VANISHING  # "no finding" ...
                assert before["reach"] < steps  # ... with a short reach
        (post, summary), (pre, pre_summary) = found[False], found[True]
        np.testing.assert_allclose(post, pre, rtol=1e-5, atol=1e-9 * pre[-1])
        assert_same_summary(summary, pre_summary, rtol=1e-5)
        # The ratio and the reach now tell the same story.
        assert summary["early"] / summary["peak"] < VANISHING
        assert 0 < summary["reach"] < 5

    def test_lstm_pre_and_post_padding_match_the_backend_gradient(self):
        steps = 7
        rng = np.random.default_rng(3)
        sequences = [rng.integers(1, 6, size=n) for n in (6, 4, 2, 5, 1)]
        y = rng.normal(size=(5, 2)).astype("float32")
        model = token_model(steps, keras.layers.LSTM(4, name="rnn"))
        embedding, lstm, head = (model.get_layer(n) for n in ("embedding", "rnn", "head"))
        ids = padded(sequences, steps, pre=False)
        mask = ids != 0

        def loss(seq):
            y_pred = head(lstm(seq, mask=keras.ops.convert_to_tensor(mask)))
            error = keras.ops.subtract(y_pred, y)
            return keras.ops.sum(keras.ops.mean(keras.ops.square(error), axis=-1))

        _, (grad,), _ = value_and_gradients(loss, [keras.ops.convert_to_numpy(embedding(ids))])
        expected = aligned_step_norms(grad, mask)
        assert np.isnan(expected[:1]).all() and not np.isnan(expected[1:]).any()
        summary = numpy_summary(expected)
        per_sequence = np.linalg.norm(grad, axis=-1)
        assert_same_summary(_time_probe.summarize(per_sequence, mask), summary)
        time_probe = probe(model, ids, y)
        for pre in (False, True):
            time_probe.set_batch(padded(sequences, steps, pre), y)  # the trace is reused
            for norms, r in by_name(time_probe.compute()).values():
                np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9)
                assert r == numpy_reach(expected)
                assert_same_summary(_time_probe.summarize(norms), summary)

    def test_exploding_reaches_every_step_and_vanishing_only_the_last(self):
        steps = 20
        rng = np.random.default_rng(5)
        x = rng.uniform(size=(3, steps, 2)).astype("float32")
        y = rng.normal(size=(3, 1)).astype("float32")
        # A linear recurrence with an orthogonal kernel of gain 1.5: the
        # gradient grows by exactly 1.5 per step back.
        exploding = keras.layers.SimpleRNN(
            4,
            activation="linear",
            recurrent_initializer=keras.initializers.Orthogonal(gain=1.5, seed=3),
            name="rnn",
        )
        found = {}
        for name, layer in (("exploding", exploding), ("vanishing", vanishing_rnn())):
            model = keras.Sequential([keras.Input((steps, 2)), layer, keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            expected = step_norms(input_gradient(model, x, y))
            norms, r = by_name(probe(model, x, y).compute())["input"]
            np.testing.assert_allclose(norms, expected, rtol=1e-4, atol=1e-9 * expected[-1])
            assert r == numpy_reach(expected)
            found[name] = _time_probe.summarize(norms)
            assert_same_summary(found[name], numpy_summary(expected))
        exploding, vanishing = found["exploding"], found["vanishing"]
        assert exploding["early"] / exploding["late"] > EXPLODING
        assert exploding["reach"] == steps
        assert vanishing["early"] / vanishing["peak"] < VANISHING
        assert 0 < vanishing["reach"] < 5

    # ------------------------------------------------- the measure itself
    @pytest.mark.parametrize(
        "norms,expected",
        [
            ([1e-8, 1e-6, 1e-4, 1e-2, 1.0], 2),  # vanishing: the last steps
            ([1e8, 1e6, 1e4, 1e2, 1.0], 5),  # exploding: every step
            ([1.0, 1.0, 1.0], 3),
            ([1.0, 1e-4, 2e-3, 1.0], 2),
            ([0.0, 0.0, 0.0], 0),  # no gradient: none
            ([1.0, 1.0, 0.0], 0),
            ([1.0, np.inf, 1.0], 3),  # measured against the finite steps
            ([np.nan, 1e-5, 1.0, np.nan], 1),
            ([np.nan, np.nan], 0),
            ([], 0),
        ],
        ids=[
            "vanishing",
            "exploding",
            "flat",
            "dip",
            "zero",
            "zero_last",
            "inf",
            "nan",
            "all_nan",
            "empty",
        ],
    )
    @pytest.mark.backend_free
    def test_reach(self, norms, expected):
        norms = np.array(norms, "float64")
        assert _time_probe.reach(norms) == expected == numpy_reach(norms)

    @pytest.mark.backend_free
    def test_profile_is_the_same_for_pre_post_and_holed_padding(self):
        rng = np.random.default_rng(7)
        steps, lengths = 12, [12, 9, 5, 5, 1, 0]
        own = [np.exp(rng.normal(scale=3.0, size=n)) for n in lengths]
        profiles, summaries = [], []
        for layout in ("pre", "post", "holes"):
            norms = rng.uniform(size=(len(lengths), steps))  # masked steps: ignored
            mask = np.zeros(norms.shape, bool)
            for i, values in enumerate(own):
                if layout == "holes":  # masked steps among the unmasked ones
                    where = np.sort(rng.choice(steps, size=len(values), replace=False))
                else:
                    start = steps - len(values) if layout == "pre" else 0
                    where = np.arange(start, start + len(values))
                norms[i, where], mask[i, where] = values, True
            profile = _time_probe.aligned_profile(norms, mask)
            np.testing.assert_allclose(profile, aligned_step_norms(norms[..., None], mask))
            summary = _time_probe.summarize(norms, mask)
            assert summary == _time_probe.summarize(profile)
            assert_same_summary(summary, numpy_summary(profile), rtol=1e-12)
            profiles.append(profile)
            summaries.append(summary)
        for profile, summary in zip(profiles[1:], summaries[1:]):
            np.testing.assert_allclose(profile, profiles[0], rtol=1e-12)
            assert_same_summary(summary, summaries[0], rtol=1e-12)
        assert np.isnan(profiles[0]).sum() == 0 and summaries[0]["steps"] == steps

    @pytest.mark.backend_free
    def test_unmasked_profile_is_the_batch_mean(self):
        norms = np.random.default_rng(8).uniform(size=(3, 5))
        np.testing.assert_allclose(_time_probe.aligned_profile(norms), norms.mean(axis=0))
        np.testing.assert_allclose(
            _time_probe.aligned_profile(norms, np.ones(norms.shape, bool)), norms.mean(axis=0)
        )
        assert _time_probe.summarize([1.0]) is None
        assert _time_probe.summarize([1.0, np.inf, 2.0]) is None

    @pytest.mark.backend_free
    def test_a_vanishing_ratio_means_a_short_reach(self):
        """From one profile: early / peak below the reach's fraction leaves
        an early step below a larger later one, so the reach stops short."""
        rng = np.random.default_rng(9)
        hits = misses = 0
        for _ in range(2000):
            size = int(rng.integers(2, 300))
            trend = rng.normal(scale=0.3) * np.arange(size)
            profile = np.exp(trend + rng.normal(scale=2.0, size=size))
            summary = _time_probe.summarize(profile)
            if summary["early"] / summary["peak"] < _time_probe.REACH_FRACTION:
                hits += 1
                assert summary["reach"] < summary["steps"]
            if summary["reach"] == summary["steps"]:
                misses += 1
                assert summary["early"] / summary["peak"] >= _time_probe.REACH_FRACTION
        assert hits > 100 and misses > 100


# ---------------------------------------------------------------- pictures
CANNOT_PLOT = [
    ([np.nan] * 6, "every step is masked or NaN"),
    ([], "every step is masked or NaN"),
    ([np.inf] * 3, "no finite gradient through time"),
    ([np.nan, np.inf, np.nan], "no finite gradient through time"),
    ([0.0] * 4, "the gradient through time is zero at every step"),
    ([np.nan, 0.0, 0.0], "the gradient through time is zero at every step"),
    ([1e-3, np.inf, 0.5, np.nan, 1.0], None),
    ([1e-30, 0.0, np.nan, 1.0], None),
    ([2.0], None),
]


class TestTimePictures:
    @pytest.mark.parametrize(
        "norms,message",
        CANNOT_PLOT,
        ids=[
            "all_nan",
            "empty",
            "all_inf",
            "nan_and_inf",
            "zero",
            "masked_zero",
            "partly_inf",
            "partly_zero",
            "one_step",
        ],
    )
    @pytest.mark.backend_free
    def test_picture_of_any_gradient(self, norms, message, caplog):
        from matplotlib.image import imread

        norms = np.array(norms, "float64")
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            png, width, height = _time_plot.plot_png(norms, "model: input")
        assert [str(w.message) for w in caught] == []
        assert [r.getMessage() for r in caplog.records] == []
        image = imread(io.BytesIO(png), format="png")
        assert image.shape[:2] == (height, width) and width > 100 and height > 100
        # What it says in words instead of a curve.
        said = _time_plot._nothing_to_plot(norms[~np.isnan(norms)])
        assert said == message or (message is not None and message in said)

    @pytest.mark.backend_free
    def test_figure_without_a_positive_value_says_so(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            png, _, _ = _plots.figure_png(lambda ax: ax.plot([0, 1], [np.inf, np.nan]), "t")
        assert png.startswith(b"\x89PNG") and not caught


# ------------------------------------------------------------------ errors
def dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def classifier(loss):
    def make():
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(3, activation="softmax", name="probs")]
        )
        model.compile(optimizer="sgd", loss=loss)
        return model

    return make


def sequence_model():
    model = keras.Sequential(
        [keras.Input((5, 2)), keras.layers.SimpleRNN(2), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def tokens_model():
    return token_model(6, keras.layers.SimpleRNN(2, name="rnn"))


def zeros(*shape, dtype="float32"):
    return np.zeros(shape, dtype)


class Empty(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()

    def __len__(self):
        return 0

    def __getitem__(self, index):
        raise IndexError(index)


def nothing():
    yield from ()


def inputs_only():
    yield zeros(2, 3)


def tf_dataset(*arrays):
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices(arrays).batch(2)


# (id, model, args, kwargs, error type, pattern)
ERRORS = [
    ("y_missing", dense_model, (zeros(2, 3),), {}, ValueError, r"(?s)`y`.*y=None"),
    ("y_missing_sequences", sequence_model, (zeros(2, 5, 2),), {}, ValueError, r"(?s)`y`.*y=None"),
    (
        "y_missing_tokens",
        tokens_model,
        (np.ones((2, 6), "int32"),),
        {},
        ValueError,
        r"(?s)`y`.*y=None",
    ),
    ("y_missing_generator", dense_model, (inputs_only(),), {}, ValueError, r"(?s)`y`.*y=None"),
    (
        "ragged_list",
        dense_model,
        ([[0.0] * 3, [0.0] * 2], [0.0, 1.0]),
        {},
        ValueError,
        r"`x`.*ragged",
    ),
    (
        "target_rows",
        dense_model,
        (zeros(4, 3), zeros(3, 1)),
        {},
        ValueError,
        r"same number of rows.*x with 4 rows, y with 3 rows",
    ),
    (
        "sample_weight_rows",
        dense_model,
        (zeros(4, 3), zeros(4, 1), np.ones(7)),
        {},
        ValueError,
        r"same number of rows.*sample_weight with 7 rows",
    ),
    (
        "empty_batch",
        dense_model,
        (zeros(0, 3), zeros(0, 1)),
        {},
        ValueError,
        r"`x` must hold a batch",
    ),
    ("scalar_x", dense_model, (3.0, zeros(2, 1)), {}, ValueError, r"`x` must hold a batch.*\(\)"),
    ("empty_generator", dense_model, (nothing(),), {}, ValueError, r"`x` must yield.*generator"),
    ("empty_py_dataset", dense_model, (Empty(),), {}, ValueError, r"`x` must yield.*PyDataset"),
    ("object_entries", dense_model, ([object(), object()], zeros(2, 1)), {}, TypeError, r"`x`"),
    ("x_none", dense_model, (None, zeros(2, 1)), {}, TypeError, r"`x`.*x=None"),
    (
        "not_compiled",
        lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]),
        (zeros(2, 3), zeros(2, 1)),
        {},
        ValueError,
        r"`model` must be compiled",
    ),
    (
        "threshold_out_of_range",
        dense_model,
        (zeros(2, 3), zeros(2, 1)),
        {"thresholds": {"vanishing_through_time": 5.0}},
        ValueError,
        r"`vanishing_through_time` must be in",
    ),
    (
        "threshold_unknown_key",
        dense_model,
        (zeros(2, 3), zeros(2, 1)),
        {"thresholds": {"nope": 1.0}},
        (TypeError, ValueError),
        r"nope",
    ),
    (
        "threshold_array",
        dense_model,
        (zeros(2, 3), zeros(2, 1)),
        {"thresholds": {"vanishing_through_time": np.zeros(5000)}},
        TypeError,
        r"`vanishing_through_time` must be a float",
    ),
]


# The model or its loss cannot take the batch: `batch.check_batch` runs them
# on one example first. (id, model, x, y, pattern)
FORWARD_ERRORS = [
    (
        "long_list_of_wrong_shape",
        dense_model,
        ([[0.5] * 7] * 3000, [1.0] * 3000),
        {},
        ValueError,
        r"`x` holds inputs of shape \(3000, 7\), which the model cannot take",
    ),
    (
        "input_shape",
        dense_model,
        (zeros(4, 7), zeros(4, 1)),
        {},
        ValueError,
        r"`x` holds inputs of shape \(4, 7\), which the model cannot take",
    ),
    (
        "sequence_shape",
        sequence_model,
        (zeros(4, 5, 3), zeros(4, 1)),
        {},
        ValueError,
        r"`x` holds inputs of shape \(4, 5, 3\), which the model cannot take",
    ),
    (
        "input_structure",
        dense_model,
        ({"other": zeros(2, 3)}, zeros(2, 1)),
        {},
        ValueError,
        r"`x` holds inputs of shape \{'other': \(2, 3\)\}, which the model cannot take",
    ),
    # Refused by Keras with a shape error; the message names the other loss.
    (
        "class_indices_into_categorical",
        classifier("categorical_crossentropy"),
        (zeros(4, 3), np.array([[0], [2], [1], [2]])),
        {},
        ValueError,
        r"(?s)cannot take.*class indices \(0..2\) for the 3 units of `probs`: use "
        r'`loss="sparse_categorical_crossentropy"`.*to_categorical\(y, 3\)',
    ),
    (
        "one_hot_into_sparse",
        classifier("sparse_categorical_crossentropy"),
        (zeros(4, 3), np.eye(3, dtype="float32")[[0, 2, 1, 2]]),
        {},
        ValueError,
        r'(?s)cannot take.*look one-hot \(3 columns.*`loss="categorical_crossentropy"`',
    ),
    (
        "strings",
        dense_model,
        (np.full((2, 3), "a"), zeros(2, 1)),
        {},
        ValueError,
        r"`x` holds inputs of shape \(2, 3\)",
    ),
]


class TestDiagnoseErrors:
    @pytest.mark.parametrize(
        "make_model,args,kwargs,error,pattern",
        [case[1:] for case in ERRORS],
        ids=[case[0] for case in ERRORS],
    )
    def test_error_is_short_and_names_its_argument(self, make_model, args, kwargs, error, pattern):
        with pytest.raises(error, match=pattern) as info:
            gk.diagnose(make_model(), *args, **kwargs)
        assert len(str(info.value)) < MAX_MESSAGE, str(info.value)

    @pytest.mark.parametrize(
        "make_model,args,kwargs,error,pattern",
        [case[1:] for case in FORWARD_ERRORS],
        ids=[case[0] for case in FORWARD_ERRORS],
    )
    def test_check_batch_error_is_short(self, make_model, args, kwargs, error, pattern):
        with pytest.raises(error, match=pattern) as info:
            batch.check_batch(make_model(), *args, **kwargs)
        assert len(str(info.value)) < MAX_MESSAGE, str(info.value)

    @pytest.mark.parametrize(
        "make_model,args,kwargs,error,pattern",
        [case[1:] for case in FORWARD_ERRORS],
        ids=[case[0] for case in FORWARD_ERRORS],
    )
    def test_diagnose_error_is_short(self, make_model, args, kwargs, error, pattern):
        with pytest.raises(error, match=pattern) as info:
            gk.diagnose(make_model(), *args, **kwargs)
        assert len(str(info.value)) < MAX_MESSAGE, str(info.value)

    def test_empty_tf_dataset(self):
        dataset = tf_dataset(zeros(0, 3), zeros(0, 1))
        with pytest.raises(ValueError, match=r"`x` must yield.*tf.data.Dataset") as info:
            gk.diagnose(dense_model(), dataset)
        assert len(str(info.value)) < MAX_MESSAGE

    @pytest.mark.skipif(BACKEND == "jax", reason="JAX clips an out-of-range index")
    def test_token_out_of_range(self):
        ids, model = np.full((2, 6), 99, "int32"), tokens_model()
        with pytest.raises(ValueError, match=r"`x` holds inputs of shape \(2, 6\)") as info:
            batch.check_batch(model, ids, zeros(2, 2))
        assert len(str(info.value)) < MAX_MESSAGE
        # The probe's own error, when the forward check passes (as in GradientBoard).
        time_probe = _time_probe.TimeProbe(model, ids, zeros(2, 2), argument="x")
        with pytest.raises(ValueError, match=r"`x` holds token ids of shape \(2, 6\)") as info:
            time_probe.compute()
        assert len(str(info.value)) < MAX_MESSAGE

    @pytest.mark.backend_free
    def test_errors_before_any_tensor(self):
        with pytest.raises(TypeError, match=r"`model` must be a keras.Model") as info:
            gk.diagnose(keras.layers.Dense(1), zeros(2, 3), zeros(2, 1))
        assert len(str(info.value)) < MAX_MESSAGE
        unbuilt = keras.Sequential([keras.layers.Dense(1)])
        with pytest.raises(TypeError, match="`thresholds`") as info:
            gk.diagnose(unbuilt, zeros(2, 3), zeros(2, 1), thresholds="strict")
        assert len(str(info.value)) < MAX_MESSAGE

    @pytest.mark.backend_free
    def test_long_thresholds_value_gives_a_short_error(self):
        unbuilt = keras.Sequential([keras.layers.Dense(1)])
        with pytest.raises(TypeError, match="`thresholds`") as info:
            gk.diagnose(unbuilt, zeros(2, 3), zeros(2, 1), thresholds=[1e-3] * 5000)
        assert len(str(info.value)) < MAX_MESSAGE

    def test_python_lists_are_one_array(self):
        rng = np.random.default_rng(10)
        x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 1))
        model = dense_model()
        expected = gk.diagnose(model, x, y)
        found = gk.diagnose(model, x.tolist(), y.tolist())  # float64 arrays: the same trace
        assert found.measures["depth"]["layers"] == expected.measures["depth"]["layers"]
        np.testing.assert_allclose(
            found.measures["depth"]["norms"], expected.measures["depth"]["norms"], rtol=1e-6
        )

    def test_check_batch_needs_y_for_a_compiled_loss_only(self):
        x = zeros(2, 3)
        with pytest.raises(ValueError, match=r"`y` must hold the batch's targets.*y=None") as info:
            batch.check_batch(dense_model(), x)
        assert len(str(info.value)) < MAX_MESSAGE

        class OwnLoss(keras.Sequential):
            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
                return keras.ops.mean(keras.ops.square(y_pred))

        model = OwnLoss([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        found, y, sample_weight = batch.check_batch(model, [[0.0, 1.0, 2.0]])
        assert found.shape == (1, 3) and y is None and sample_weight is None

    def test_weight_regularizer_is_no_error(self):
        # The batch check runs the loss in a stateless scope, where Keras's
        # weight regularizers read the value the scope maps to each variable
        # (examples/deep_rnn.py's official setup decays its kernels).
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.1)),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse")
        before = [keras.ops.convert_to_numpy(w) for w in model.weights]
        x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        report = gk.diagnose(model, x, np.ones((8, 1), "float32"))
        assert report.measures["gradient_norm"] > 0
        for w, old in zip(model.weights, before):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), old)

    @pytest.mark.backend_free
    def test_first_batch_converts_and_checks(self):
        x, y, sample_weight = batch.first_batch([[0, 1, 2], [3, 4, 5]], [0.5, 1.0], None)
        assert x.shape == (2, 3) and y.shape == (2,) and sample_weight is None
        # A list of arrays stays a structure (a model with two inputs).
        x, _, _ = batch.first_batch([zeros(2, 3), [[1], [2]]], zeros(2, 1), [1.0, 1.0])
        assert [a.shape for a in x] == [(2, 3), (2, 1)]
        for arguments, error, pattern in [
            (([[0.0] * 3, [0.0]], None, None), ValueError, r"`x`.*ragged"),
            ((zeros(3, 3), zeros(2, 1), None), ValueError, r"x with 3 rows, y with 2 rows"),
            ((nothing(), None, None), ValueError, r"`x` must yield"),
            ((Empty(), None, None), ValueError, r"`x` must yield"),
            (([[None]], None, None), TypeError, r"`x` must hold arrays"),
        ]:
            with pytest.raises(error, match=pattern) as info:
                batch.first_batch(*arguments)
            assert len(str(info.value)) < MAX_MESSAGE

    @pytest.mark.backend_free
    def test_time_probe_argument_rejects_missing_targets_and_ragged_lists(self):
        with pytest.raises(ValueError, match=r"`time_probe`.*time_probe\[1\]=None"):
            _time_plot.validate_time_probe((zeros(2, 4, 1), None))
        with pytest.raises(ValueError, match=r"`time_probe`.*pad the sequences.*ragged list"):
            _time_plot.validate_time_probe(([[1, 2], [3]], zeros(2, 1)))

    @pytest.mark.backend_free
    def test_brief_error_keeps_the_message_proper(self):
        wrapped = ValueError(
            'in user code:\n\n    File "/a.py", line 3, in f  *\n        return g(x)\n\n'
            "    ValueError: Exception encountered when calling Sequential.call().\n\n"
            "    \x1b[1mInput 0 of layer 'dense' is incompatible\x1b[0m\n\n"
            "    Arguments received by Sequential.call():\n      • inputs=" + "x" * 10000
        )
        assert _time_probe.brief_error(wrapped) == "Input 0 of layer 'dense' is incompatible"
        runtime = RuntimeError(
            "Graph execution error:\n\nDetected at node a defined at (most recent call last):\n"
            '  File "/b.py", line 1, in <module>\n\nindices[0,0] = 99 is not in [0, 5)\n'
            "\t [[{{node GatherV2}}]] [Op:__inference_traced_2605]"
        )
        assert _time_probe.brief_error(runtime) == "indices[0,0] = 99 is not in [0, 5)"
        eager = ValueError(
            "{{function_node __wrapped__GatherV2_device_/job:localhost/device:CPU:0}} "
            "indices[0,0] = 99 is not in [0, 6) [Op:GatherV2]"
        )
        assert _time_probe.brief_error(eager) == "indices[0,0] = 99 is not in [0, 6)"
        assert len(_time_probe.brief_error(ValueError("y" * 5000))) == _time_probe.ERROR_CHARACTERS
