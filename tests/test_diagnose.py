"""`keras_gradkit.diagnose`: each measure checked against the backend's own
gradient taken here (`tf.GradientTape`, `jax.grad`, `torch.autograd`), each
kind of finding derived from those numbers and the thresholds, the advice
and its guide links, the variables it must leave alone, its inputs and its
errors."""

import functools
import json
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_gradkit as gk
from keras_gradkit.diagnostics import Thresholds

BACKEND = keras.backend.backend()
GUIDES = Path(__file__).resolve().parents[1] / "docs" / "guides"
DEFAULTS = Thresholds()
SEEDS = (0, 1, 2)
BATCH_SIZES = (4, 8)
# The sequence length at which the defaults must flag Keras's LSTM and GRU.
LONG_STEPS = 500
STACK_STEPS = 20
TIME_KINDS = ("vanishing_through_time", "exploding_through_time")
DEPTH_KINDS = ("vanishing_across_depth", "exploding_across_depth")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """PyTorch runs these small ops (8 units, 500 steps) one by one: its
    intra-op threads add only synchronization, and on a shared machine one
    thread runs them several times faster."""
    if BACKEND != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------- independent gradients
class LossGradients:
    """`(d loss / d x, [d loss / d v for v in model.trainable_variables])` as
    float64 arrays, `loss` the compiled loss (the batch mean) of the model in
    training mode, differentiated here by the backend itself.

    Traced once per model and batch shape on TensorFlow (`tf.function`,
    which reads the variables when it runs) and JAX (`jax.jit` of a function
    of the variables' values); `traced=False` runs them eagerly, as PyTorch
    always does.
    """

    def __init__(self, model, traced=True):
        self.model = model
        if BACKEND == "tensorflow":
            import tensorflow as tf

            self._function = tf.function(self._tensorflow) if traced else self._tensorflow
        elif BACKEND == "jax":
            import jax

            grad = jax.grad(self._jax_loss, argnums=(0, 2))
            self._function = jax.jit(grad) if traced else grad

    def __call__(self, x, y, sample_weight=None):
        model = self.model
        if BACKEND == "tensorflow":
            tensors = (
                None if a is None else keras.ops.convert_to_tensor(a) for a in (x, y, sample_weight)
            )
            grad_x, *grads = self._function(*tensors)
        elif BACKEND == "jax":
            grads, grad_x = self._function(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                x,
                y,
                sample_weight,
            )
        else:
            grad_x, *grads = self._torch(x, y, sample_weight)

        def as_array(g):
            return np.asarray(keras.ops.convert_to_numpy(g), "float64")

        return as_array(grad_x), [as_array(g) for g in grads]

    def _tensorflow(self, x, y, sample_weight):
        import tensorflow as tf

        trainable = self.model.trainable_variables
        with tf.GradientTape() as tape:
            tape.watch(x)
            y_pred = self.model(x, training=True)
            loss = self.model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        sources = [x, *trainable]
        grads = tape.gradient(loss, sources)
        # A dense tensor (not an IndexedSlices after a gather); zeros where unconnected.
        return [
            tf.zeros_like(s) if g is None else tf.convert_to_tensor(g)
            for g, s in zip(grads, sources)
        ]

    def _jax_loss(self, trainable_values, non_trainable_values, x, y, sample_weight):
        model = self.model
        y_pred, _ = model.stateless_call(trainable_values, non_trainable_values, x, training=True)
        mapping = list(zip(model.trainable_variables, trainable_values))
        mapping += list(zip(model.non_trainable_variables, non_trainable_values))
        with keras.StatelessScope(state_mapping=mapping):
            return model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )

    def _torch(self, x, y, sample_weight):
        import torch

        x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        y_pred = self.model(x, training=True)
        loss = self.model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        sources = [x, *(v.value for v in self.model.trainable_variables)]
        found = torch.autograd.grad(loss, sources, allow_unused=True)
        return [torch.zeros_like(s) if g is None else g for g, s in zip(found, sources)]


def step_norms(grad_x):
    """n_t = mean_i ||d (N * loss) / d x_{i,t}||: the per-example loss of a batch of N."""
    per_example = grad_x * grad_x.shape[0]
    return np.linalg.norm(per_example.reshape(*per_example.shape[:2], -1), axis=-1).mean(axis=0)


def numpy_reach(norms, fraction=1e-3):
    # Back from the last step, until a step is zero or below fraction times the
    # largest step nearer the loss (an exploding gradient reaches every step).
    count, largest = 0, 0.0
    for value in norms[::-1]:
        largest = max(largest, value) if np.isfinite(value) else largest
        if value <= 0 or value < fraction * largest:
            break
        count += 1
    return count


def summarize(norms):
    edge = max(1, int(0.1 * norms.size))
    return {
        "steps": norms.size,
        "early": norms[:edge].mean(),
        "late": norms[-edge:].mean(),
        "peak": norms.max(),
        "reach": numpy_reach(norms),
    }


class Reference:
    """What `diagnose` measures, computed here.

    Attributes:
        layers, norms: each top-level layer with trainable variables, in
            model order, and the L2 norm of the batch-mean loss gradient
            over its variables.
        gradient_norm: the global norm of that gradient.
        time: `{sequence: summary}`; the recurrent layer, when there is one,
            is the model's first layer, so its input sequence is the model
            input and both have the input's per-step norms.
    """

    def __init__(self, model, x, y, sample_weight=None, gradients=None):
        grad_x, grads = (gradients or LossGradients(model))(x, y, sample_weight)
        by_variable = {id(v): g for v, g in zip(model.trainable_variables, grads)}
        self.layers, self.norms = [], []
        for layer in model.layers:
            parts = [by_variable[id(v)] for v in layer.trainable_variables]
            if parts:
                self.layers.append(layer.name)
                self.norms.append(math.sqrt(sum(float(np.sum(np.square(g))) for g in parts)))
        self.gradient_norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads))
        recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
        self.time = {}
        if recurrent:
            assert recurrent == model.layers[:1]
            summary = summarize(step_norms(grad_x))
            self.time = {"input": summary, recurrent[0].name: summary}

    def findings(self, thresholds):
        """`{(kind, where): value}` by the documented rules, from these numbers."""
        if not all(math.isfinite(n) for n in self.norms):
            first = next(name for name, n in zip(self.layers, self.norms) if not math.isfinite(n))
            return {("non_finite_gradient", first): math.nan}
        found = {}
        for kind in TIME_KINDS:
            threshold = getattr(thresholds, kind)
            hits = {}
            for name, s in self.time.items():
                if s["peak"] <= 0:
                    continue  # the loss does not depend on this sequence
                if kind == "vanishing_through_time" and s["early"] / s["peak"] < threshold:
                    hits[name] = s["early"] / s["peak"]
                elif kind == "exploding_through_time":
                    ratio = s["early"] / s["late"] if s["late"] > 0 else math.inf
                    if ratio > threshold:
                        hits[name] = ratio
            layers = {name: v for name, v in hits.items() if name != "input"}
            found.update({(kind, name): v for name, v in (layers or hits).items()})
        if len(self.norms) < 3:
            return found
        last = self.norms[-1]
        for kind, past in (
            ("vanishing_across_depth", lambda r, t: r < t),
            ("exploding_across_depth", lambda r, t: r > t),
        ):
            threshold = getattr(thresholds, kind)
            if past(self.norms[0] / last, threshold):
                # From the last layer back toward the input, the first one past it.
                where = next(
                    name
                    for name, n in reversed(list(zip(self.layers, self.norms)))
                    if past(n / last, threshold)
                )
                found[(kind, where)] = self.norms[0] / last
        return found


def check_measures(report, reference):
    """The report's depth profile and time summaries against the reference."""
    depth = report.measures["depth"]
    assert depth["layers"] == reference.layers
    norms, expected = np.array(depth["norms"]), np.array(reference.norms)
    # Relative to the last layer: the absolute scale has a test of its own.
    np.testing.assert_allclose(norms / norms[-1], expected / expected[-1], rtol=1e-4)
    np.testing.assert_allclose(depth["first_to_last"], expected[0] / expected[-1], rtol=1e-4)
    time = report.measures.get("time", {})
    assert set(time) == set(reference.time)
    for name, summary in reference.time.items():
        measured = time[name]
        assert measured["steps"] == summary["steps"]
        assert measured["reach"] == summary["reach"]
        for key in ("early", "late", "peak"):
            # float32 gradients: steps ~1e-30 of the peak carry no digits.
            np.testing.assert_allclose(
                measured[key], summary[key], rtol=1e-4, atol=1e-6 * summary["peak"]
            )


def check_findings(report, reference, thresholds=DEFAULTS):
    expected = reference.findings(thresholds)
    assert {(f.kind, f.where) for f in report.findings} == set(expected)
    for f in report.findings:
        assert f.threshold == thresholds.for_kind(f.kind)
        value = expected[(f.kind, f.where)]
        if math.isfinite(value):
            atol = 1e-6 if f.kind in TIME_KINDS else 0.0
            np.testing.assert_allclose(f.value, value, rtol=1e-4, atol=atol)
    assert report.ok == (not expected)
    return expected


# --------------------------------------------------------- data and models
def adding_problem(batch_size, steps, seed):
    """Values in [0, 1) and two markers, one in each half; the target is
    the sum of the two marked values."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(batch_size, steps))
    markers = np.zeros((batch_size, steps))
    rows = np.arange(batch_size)
    markers[rows, rng.integers(0, steps // 2, batch_size)] = 1.0
    markers[rows, rng.integers(steps // 2, steps, batch_size)] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    return x, np.sum(values * markers, axis=1, keepdims=True).astype("float32")


def normal_data(shape):
    def data(batch_size, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(batch_size, *shape)).astype("float32")
        return x, rng.normal(size=(batch_size, 1)).astype("float32")

    return data


def compiled(layers, **kwargs):
    model = keras.Sequential(layers)
    model.compile(optimizer="sgd", loss="mse", **kwargs)
    return model


def long_memory(steps):
    return keras.initializers.RandomUniform(2 ** (-1 / steps), 2 ** (1 / steps))


def recurrent_model(layer, steps):
    return compiled([keras.Input((steps, 2)), layer, keras.layers.Dense(1, name="head")])


def sigmoid_stack(depth=20):
    return compiled(
        [keras.Input((4,))]
        + [keras.layers.Dense(8, activation="sigmoid", name=f"dense_{i}") for i in range(depth)]
        + [keras.layers.Dense(1, name="head")]
    )


def residual_ind_rnn_stack(blocks=12):
    return compiled(
        [keras.Input((STACK_STEPS, 1)), keras.layers.Dense(8, name="projection")]
        + [
            gk.layers.ResidualIndRNN(8, timesteps=STACK_STEPS, name=f"block_{i}")
            for i in range(blocks)
        ]
        + [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1, name="head")]
    )


def small_cnn():
    return compiled(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_0"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv_1"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, name="head"),
        ]
    )


def relu_mlp():
    return compiled(
        [keras.Input((4,))]
        + [keras.layers.Dense(8, activation="relu", name=f"dense_{i}") for i in range(3)]
        + [keras.layers.Dense(1, name="head")]
    )


def adding(batch_size, seed):
    return adding_problem(batch_size, LONG_STEPS, seed)


# family: (model, data, the kinds the defaults must find)
CASES = {
    "lstm": (
        lambda: recurrent_model(keras.layers.LSTM(8, name="lstm"), LONG_STEPS),
        adding,
        {"vanishing_through_time"},
    ),
    "gru": (
        lambda: recurrent_model(keras.layers.GRU(8, name="gru"), LONG_STEPS),
        adding,
        {"vanishing_through_time"},
    ),
    "indrnn_long_memory": (
        lambda: recurrent_model(
            gk.layers.IndRNN(8, recurrent_initializer=long_memory(LONG_STEPS), name="indrnn"),
            LONG_STEPS,
        ),
        adding,
        set(),
    ),
    "sigmoid_stack": (sigmoid_stack, normal_data((4,)), {"vanishing_across_depth"}),
    "residual_ind_rnn_stack": (residual_ind_rnn_stack, normal_data((STACK_STEPS, 1)), set()),
    "small_cnn": (small_cnn, normal_data((8, 8, 1)), set()),
}


@functools.cache
def initial_weights(family):
    """The initial weights of the family's model for each seed (NumPy
    arrays, shared by the batch sizes)."""
    weights = []
    for seed in SEEDS:
        keras.utils.set_random_seed(seed)
        weights.append(CASES[family][0]().get_weights())
    return weights


def guide_anchors(path):
    """The MkDocs slugs of a guide's headings (outside code blocks)."""
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip()
            slug = re.sub(r"[^\w\s-]", "", title).strip().lower()
            anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


def snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


# ------------------------------------------------------------------- tests
# The 12-block stack, the costliest family, at the first batch size only: the
# other families prove the measures on a batch of another size.
FAMILIES_AND_BATCHES = [
    (family, batch_size)
    for batch_size in BATCH_SIZES
    for family in CASES
    if batch_size == BATCH_SIZES[0] or family != "residual_ind_rnn_stack"
]


class TestDiagnose:
    @pytest.mark.parametrize("family,batch_size", FAMILIES_AND_BATCHES)
    def test_findings_follow_from_independent_gradients(self, family, batch_size):
        build, data, kinds = CASES[family]
        # One model takes each seed's initial weights in turn, so that it
        # keeps its traces (and diagnose reuses its own, on new weights).
        initial = initial_weights(family)
        model = build()
        gradients = LossGradients(model)
        # Every seed at the first batch size; the others, which prove the
        # same measures on a batch of another size, with the first seed.
        seeds = SEEDS if batch_size == BATCH_SIZES[0] else SEEDS[:1]
        for seed, weights in zip(seeds, initial):
            model.set_weights(weights)
            x, y = data(batch_size, seed)
            try:
                self.check_case(family, kinds, model, x, y, gradients)
            except AssertionError as error:
                raise AssertionError(
                    f"{family}, seed {seed}, batch {batch_size}: {error}"
                ) from error

    def check_case(self, family, kinds, model, x, y, gradients):
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y, gradients=gradients)
        check_measures(report, reference)
        expected = check_findings(report, reference)
        # The claim, on the numbers computed here.
        assert {kind for kind, _ in expected} == kinds
        text = str(report)
        for f in report.findings:
            assert f.kind in text and f.where in text and f.advice in text
        if family in ("lstm", "gru"):
            assert [f.where for f in report.findings] == [family]
            advice = report.findings[0].advice
            assert ("IndRNN" in advice or "chrono" in advice) and "activation" not in advice
        if family == "sigmoid_stack":
            advice = report.findings[0].advice
            assert "sigmoid" in advice and "ReLU" in advice and "IndRNN" not in advice
        decoded = json.loads(json.dumps(report.to_dict(), allow_nan=True))
        assert decoded["ok"] is report.ok
        assert [(f["kind"], f["where"]) for f in decoded["findings"]] == [
            (f.kind, f.where) for f in report.findings
        ]
        assert decoded["measures"]["depth"]["layers"] == reference.layers

    @pytest.mark.parametrize("batch_size", BATCH_SIZES)
    @pytest.mark.parametrize("family", ["relu_mlp", "small_cnn"])
    def test_depth_norms_are_those_of_the_batch_mean_loss(self, family, batch_size):
        build, shape = {"relu_mlp": (relu_mlp, (4,)), "small_cnn": (small_cnn, (8, 8, 1))}[family]
        x, y = normal_data(shape)(batch_size, seed=0)
        model = build()
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y)
        assert report.measures["depth"]["layers"] == reference.layers
        np.testing.assert_allclose(report.measures["depth"]["norms"], reference.norms, rtol=1e-4)
        np.testing.assert_allclose(
            report.measures["gradient_norm"], reference.gradient_norm, rtol=1e-4
        )

    def test_exploding_through_time(self):
        # u = 1.05 > 1 with ReLU: the gradient grows by 1.05 per step back.
        steps = 150
        x, y = adding_problem(4, steps, seed=0)
        layer = gk.layers.IndRNN(
            8, recurrent_initializer=keras.initializers.Constant(1.05), name="indrnn"
        )
        model = recurrent_model(layer, steps)
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y)
        check_measures(report, reference)
        assert check_findings(report, reference).keys() == {("exploding_through_time", "indrnn")}
        summary = reference.time["indrnn"]
        assert summary["early"] / summary["late"] > 3 * DEFAULTS.exploding_through_time
        advice = report.findings[0].advice
        assert "ClippedOptimizer" in advice and "recurrent bound" in advice

    def test_exploding_across_depth(self):
        # A first kernel at 1e-6 keeps every later activation near 0, so each
        # layer's gradient is mostly its bias's, the backward signal, which
        # each kernel at scale 1.5 multiplies by about 1.5 * sqrt(8) on its way
        # back.
        scales = [1e-6] + [1.5] * 5
        keras.utils.set_random_seed(0)
        model = compiled(
            [keras.Input((4,))]
            + [
                keras.layers.Dense(
                    1 if i == len(scales) - 1 else 8,
                    kernel_initializer=keras.initializers.RandomNormal(stddev=s),
                    name=f"dense_{i}",
                )
                for i, s in enumerate(scales)
            ]
        )
        x, y = normal_data((4,))(8, seed=0)
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y)
        check_measures(report, reference)
        assert [kind for kind, _ in check_findings(report, reference)] == ["exploding_across_depth"]
        assert reference.norms[0] / reference.norms[-1] > 3 * DEFAULTS.exploding_across_depth
        assert "initialization" in report.findings[0].advice

    @pytest.mark.parametrize("argument", ["x", "y", "sample_weight"])
    @pytest.mark.parametrize("value", [np.nan, np.inf])
    def test_non_finite_batch_is_found_at_input(self, argument, value):
        x, y = normal_data((4,))(4, seed=0)
        batch = {"x": x, "y": y, "sample_weight": np.ones(4, "float32")}
        batch[argument] = batch[argument].copy()
        batch[argument][1] = value
        report = gk.diagnose(relu_mlp(), **batch)
        bad = int(np.size(batch[argument][1]))
        assert [(f.kind, f.where, f.value) for f in report.findings] == [
            ("non_finite_gradient", "input", bad)
        ]
        assert report.measures == {"non_finite_entries": bad} and not report.ok
        assert "non_finite_gradient at input" in str(report)
        json.dumps(report.to_dict(), allow_nan=True)

    def test_non_finite_gradient_is_found_at_the_first_layer_in_model_order(self):
        # sqrt at 0 has an infinite slope: the layer before it gets a
        # non-finite gradient; the stop_gradient keeps the first layer's
        # gradient finite (zero), and the head's is finite.
        model = compiled(
            [
                keras.Input((4,)),
                keras.layers.Dense(4, name="first"),
                keras.layers.Lambda(keras.ops.stop_gradient, name="stop"),
                keras.layers.Dense(4, kernel_initializer="zeros", name="zero"),
                keras.layers.Lambda(keras.ops.sqrt, name="sqrt"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        x, y = normal_data((4,))(4, seed=0)
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y)
        assert reference.layers == ["first", "zero", "head"]
        assert [math.isfinite(n) for n in reference.norms] == [True, False, True]
        assert [math.isfinite(n) for n in report.measures["depth"]["norms"]] == [True, False, True]
        check_findings(report, reference)
        assert [(f.kind, f.where) for f in report.findings] == [("non_finite_gradient", "zero")]
        # Before the first update no advice names the learning rate.
        assert "learning rate" not in report.findings[0].advice
        assert "non_finite_gradient at zero" in str(report)
        json.dumps(report.to_dict(), allow_nan=True)

    def test_non_finite_weights_are_found_at_the_first_non_finite_layer(self):
        model = relu_mlp()
        kernel, bias = model.get_layer("dense_1").get_weights()
        model.get_layer("dense_1").set_weights([np.full_like(kernel, np.nan), bias])
        x, y = normal_data((4,))(4, seed=0)
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y)
        finite = [math.isfinite(n) for n in reference.norms]
        assert (
            not finite[0]
            and [math.isfinite(n) for n in report.measures["depth"]["norms"]] == finite
        )
        # The forward pass is not finite from dense_1 on, which explains the
        # gradients: the finding names the layer whose weights are NaN.
        assert [(f.kind, f.where) for f in report.findings] == [("non_finite_forward", "dense_1")]

    def test_thresholds_change_the_decision(self):
        x, y = adding_problem(4, 100, seed=0)
        model = recurrent_model(keras.layers.LSTM(8, name="lstm"), 100)
        reference = Reference(model, x, y)
        ratio = reference.time["lstm"]["early"] / reference.time["lstm"]["peak"]
        assert 1e-30 < ratio < DEFAULTS.vanishing_through_time
        for thresholds in (DEFAULTS, Thresholds(vanishing_through_time=ratio / 10)):
            report = gk.diagnose(model, x, y, thresholds=thresholds)
            expected = check_findings(report, reference, thresholds)
            assert bool(expected) == (thresholds is DEFAULTS)

        x, y = normal_data((4,))(8, seed=0)
        model = sigmoid_stack()
        reference = Reference(model, x, y)
        ratio = reference.norms[0] / reference.norms[-1]
        looser = Thresholds(vanishing_across_depth=ratio / 10)
        assert check_findings(gk.diagnose(model, x, y, thresholds=looser), reference, looser) == {}

        model = relu_mlp()
        reference = Reference(model, x, y)
        ratio = reference.norms[0] / reference.norms[-1]
        assert not gk.diagnose(model, x, y).findings
        stricter = (
            Thresholds(vanishing_across_depth=min(0.99, 2 * ratio))
            if ratio < 1
            else Thresholds(exploding_across_depth=max(1.01, ratio / 2))
        )
        report = gk.diagnose(model, x, y, thresholds=stricter)
        assert check_findings(report, reference, stricter)
        assert "Gradient report: 1 finding." in str(report)

    def test_what_keras_saves_is_the_same_after_diagnose(self, tmp_path):
        # diagnose keeps its traced probe on the model; Keras's saving must
        # not see it: the same files, the same config, the same weights.
        import json
        import zipfile

        x, y = adding_problem(4, 12, seed=0)
        model = recurrent_model(keras.layers.LSTM(4, name="lstm"), 12)
        model.train_on_batch(x, y)

        def saved(name):
            path = tmp_path / name
            model.save(path)
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                names = sorted(archive.namelist())
            return names, config, [np.asarray(w) for w in keras.saving.load_model(path).weights]

        before = saved("before.keras")
        gk.diagnose(model, x, y)
        after = saved("after.keras")
        assert after[0] == before[0]
        assert after[1] == before[1]
        assert len(after[2]) == len(before[2])
        for a, b in zip(after[2], before[2]):
            np.testing.assert_array_equal(a, b)

    @pytest.mark.parametrize("dropout_seed", [None, 3], ids=["unseeded", "seeded"])
    def test_changes_no_variable(self, dropout_seed):
        x, y = normal_data((6,))(8, seed=0)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, name="dense"),
                keras.layers.BatchNormalization(name="norm"),
                keras.layers.Dropout(0.5, seed=dropout_seed, name="dropout"),
                keras.layers.Dense(4, name="hidden"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        model.optimizer.build(model.trainable_variables)
        # One step: moving statistics, slots and metric totals off their initial values.
        model.train_on_batch(x, y)
        variables = model.variables + model.optimizer.variables + model.metrics_variables
        seed_state = model.get_layer("dropout").seed_generator.state
        assert len(model.metrics_variables) >= 4 and model.optimizer.variables
        assert any(v is seed_state for v in model.variables)
        before = snapshot(variables)
        torch_rng = self.torch_rng_state()
        first = gk.diagnose(model, x, y)
        second = gk.diagnose(model, x, y)
        for variable, old, new in zip(variables, before, snapshot(variables)):
            np.testing.assert_array_equal(old, new, err_msg=variable.path)
        # Keras's PyTorch backend draws an unseeded dropout from torch's own generator.
        np.testing.assert_array_equal(torch_rng, self.torch_rng_state())
        np.testing.assert_equal(first.to_dict(), second.to_dict())
        # Training mode: batch statistics and the dropout mask of the seed state.
        check_measures(first, Reference(model, x, y))

    @staticmethod
    def torch_rng_state():
        if BACKEND != "torch":
            return None
        import torch

        return torch.random.get_rng_state().numpy()

    @pytest.mark.tensorflow_only  # TensorFlow's eager tape; the others have no second mode
    def test_model_still_differentiates_eagerly_after_diagnose(self):
        x, y = adding_problem(4, 20, seed=0)
        model = recurrent_model(gk.layers.IndRNN(8, name="indrnn"), 20)
        report = gk.diagnose(model, x, y)
        reference = Reference(model, x, y, gradients=LossGradients(model, traced=False))
        check_measures(report, reference)

    def test_dataset_and_generator_give_the_report_of_their_first_batch(self):
        tf = pytest.importorskip("tensorflow")
        steps = 20
        x, y = adding_problem(8, steps, seed=0)
        model = compiled(
            [
                keras.Input((steps, 2)),
                keras.layers.LSTM(8, name="lstm"),
                keras.layers.Dense(8, name="hidden"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        expected = gk.diagnose(model, x[:4], y[:4]).to_dict()

        def batches():
            for start in (0, 4):
                yield x[start : start + 4], y[start : start + 4]

        class Batches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()

            def __len__(self):
                return 2

            def __getitem__(self, index):
                return x[4 * index : 4 * index + 4], y[4 * index : 4 * index + 4]

        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        for source in (lambda: dataset, batches, Batches):
            report = gk.diagnose(model, source()).to_dict()
            assert report["findings"] == expected["findings"]
            depth, expected_depth = report["measures"]["depth"], expected["measures"]["depth"]
            assert depth["layers"] == expected_depth["layers"]
            np.testing.assert_allclose(depth["norms"], expected_depth["norms"], rtol=1e-6)
            assert report["measures"]["time"].keys() == expected["measures"]["time"].keys()
            for name, summary in expected["measures"]["time"].items():
                for key, value in summary.items():
                    np.testing.assert_allclose(
                        report["measures"]["time"][name][key], value, rtol=1e-6
                    )
        for source in (dataset, batches()):
            with pytest.raises(ValueError, match="`y` and `sample_weight` must be None"):
                gk.diagnose(model, source, y)

    # ---------------------------------------------------------------- errors
    @pytest.mark.backend_free
    def test_errors_without_a_tensor(self):
        x, y = np.zeros((2, 3), "float32"), np.zeros((2, 1), "float32")
        unbuilt = keras.Sequential([keras.layers.Dense(1)])
        with pytest.raises(ValueError, match=r"`model` must be compiled.*model.compile"):
            gk.diagnose(unbuilt, x, y)
        with pytest.raises(TypeError, match=r"`model` must be a keras.Model.*Dense"):
            gk.diagnose(keras.layers.Dense(1), x, y)
        for thresholds in (1e-3, "strict", [1e-3], Thresholds):
            with pytest.raises(TypeError, match="`thresholds` must be None"):
                gk.diagnose(unbuilt, x, y, thresholds=thresholds)
        assert gk.diagnose is gk.diagnostics.diagnose

    @pytest.mark.parametrize(
        "argument,value",
        [
            ("vanishing_through_time", 2.0),
            ("vanishing_through_time", 0.0),
            ("exploding_through_time", 1.0),
            ("vanishing_across_depth", -1e-3),
            ("exploding_across_depth", 0.5),
            ("update_ratio", 0.0),
            ("clipped_fraction", 1.5),
            ("skipped_fraction", 0.0),
        ],
    )
    @pytest.mark.backend_free
    def test_thresholds_reject_values_out_of_range(self, argument, value):
        with pytest.raises(ValueError, match=rf"`{argument}` must be in .*{argument}={value!r}"):
            Thresholds(**{argument: value})

    @pytest.mark.backend_free
    def test_thresholds_reject_other_types(self):
        with pytest.raises(TypeError, match="`vanishing_through_time` must be a float.*'x'"):
            Thresholds("x")
        with pytest.raises(TypeError, match="`exploding_across_depth` must be a float.*True"):
            Thresholds(exploding_across_depth=True)
        assert Thresholds(vanishing_through_time=1e-2).vanishing_through_time == 1e-2
        assert Thresholds(**DEFAULTS.to_dict()) == DEFAULTS
