"""The activation measures of the gradient doctor
(`keras_gradkit.diagnostics.activations`): dead ReLU units and saturated
entries checked against an independent NumPy forward pass computed from the
layers' weights, at initialization and after a few `fit` steps; the layer
that first turns non-finite; and a measure that leaves the model as it was
(variables, moving statistics, seed generators, no hook left behind)."""

import types

import keras
import numpy as np
import pytest

import keras_gradkit as gk
from keras_gradkit import _cache
from keras_gradkit.diagnostics import activations
from keras_gradkit.diagnostics.activations import (
    ActivationMeasures,
    LayerActivation,
    measure_activations,
)
from keras_gradkit.layers import IndRNN, WeightNormalization

BACKEND = keras.backend.backend()
BATCH = 16
# One width for the hidden layers of every test: under JAX each eager op
# compiles once per shape, so shared shapes keep the file fast.
UNITS = 6


# ----------------------------------------------------------------- NumPy
def relu(z):
    return np.maximum(z, 0.0)


NUMPY_ACTIVATIONS = {
    "relu": relu,
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "linear": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
}


def numpy_dense(layer, x, activation=None):
    kernel, bias = layer.get_weights()
    z = x.astype("float64") @ kernel.astype("float64") + bias
    return NUMPY_ACTIVATIONS[activation or layer.activation.__name__](z)


def numpy_conv2d(layer, x):
    """A 'valid' stride-1 Conv2D with relu, in the layer's data format."""
    kernel, bias = (w.astype("float64") for w in layer.get_weights())
    channels_first = layer.data_format == "channels_first"
    x = np.moveaxis(x, 1, -1) if channels_first else x
    kh, kw = kernel.shape[:2]
    rows, cols = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], rows, cols, kernel.shape[-1]))
    for i in range(rows):
        for j in range(cols):
            patch = x[:, i : i + kh, j : j + kw, :]
            out[:, i, j] = np.einsum("bhwc,hwcf->bf", patch, kernel) + bias
    out = relu(out)
    return np.moveaxis(out, -1, 1) if channels_first else out


def numpy_recurrence(x, kernel, recurrent, bias, activation, elementwise=False):
    """h_t = act(x_t W + R h_{t-1} + b), all steps; R diagonal (IndRNN) when
    `elementwise`."""
    h = np.zeros((x.shape[0], kernel.shape[1]))
    steps = []
    for t in range(x.shape[1]):
        carried = h * recurrent if elementwise else h @ recurrent
        h = NUMPY_ACTIVATIONS[activation](x[:, t] @ kernel + carried + bias)
        steps.append(h)
    return np.stack(steps, axis=1)


def dead_fraction(y, axis=-1):
    """The fraction of units (along `axis`) that are 0 for every other index."""
    y = np.moveaxis(np.asarray(y), axis, -1)
    return float(np.mean(np.all(y.reshape(-1, y.shape[-1]) == 0.0, axis=0)))


def saturated_fraction(name, y):
    y = np.asarray(y, "float64")
    derivative = {"sigmoid": y * (1 - y) / 0.25, "tanh": 1 - y**2}[name]
    return float(np.mean(derivative < 0.01))


def positive_batch(*shape, seed=0):
    """Inputs in [0, 1): with random weights, some ReLU units stay at 0."""
    return np.random.default_rng(seed).uniform(size=(BATCH, *shape)).astype("float32")


def set_random_weights(model, seed=1, scale=1.0):
    """Weights from NumPy (the same on every backend): non-symmetric, with
    biases, so that a transposed kernel or a wrong axis shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([scale * rng.normal(size=w.shape).astype("float32") for w in weights])


def by_name(measures):
    return {entry.layer: entry for entry in measures.layers}


def snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.variables}


def fit_three_steps(model, x, y, loss):
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, shuffle=False)


# ----------------------------------------------------------------- tests
class Spy(keras.layers.Layer):
    """Passes its input through. While the model runs, records which of the
    `record.watched` layers carry a hook (a `call` of their own); raises
    instead when `record.fail` is set."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A namespace: Keras tracks neither it nor the layers it holds.
        self.record = types.SimpleNamespace(watched=(), hooked=None, fail=False)

    def call(self, inputs):
        if self.record.fail:
            raise ValueError("the forward pass fails here")
        watched = self.record.watched
        self.record.hooked = [layer.name for layer in watched if "call" in layer.__dict__]
        return inputs


class TestActivationMeasures:
    @pytest.mark.parametrize("fitted", [False, True], ids=["init", "fitted"])
    def test_dense_relu_and_separate_sigmoid_match_numpy(self, fitted):
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(UNITS, activation="relu", name="hidden"),
                keras.layers.Dense(3, name="logits"),
                keras.layers.Activation("sigmoid", name="probability"),
            ]
        )
        set_random_weights(model, scale=2.0)
        x = positive_batch(5)
        if fitted:
            y = (np.random.default_rng(2).uniform(size=(BATCH, 3)) > 0.5).astype("float32")
            fit_three_steps(model, x, y, "binary_crossentropy")

        measures = measure_activations(model, x)

        hidden = numpy_dense(model.layers[0], x)
        probability = numpy_dense(model.layers[1], hidden, "sigmoid")
        assert isinstance(measures, ActivationMeasures)
        assert [e.layer for e in measures.layers] == ["hidden", "logits", "probability"]
        found = by_name(measures)
        assert found["hidden"] == LayerActivation(
            "hidden", "relu", UNITS, dead_fraction(hidden), None, False, False, None
        )
        assert found["logits"] == LayerActivation(
            "logits", "linear", 3, None, None, False, False, None
        )
        assert found["probability"] == LayerActivation(
            "probability",
            "sigmoid",
            3,
            None,
            saturated_fraction("sigmoid", probability),
            True,
            True,
            "logits",
        )
        if not fitted:  # the measures are not trivially 0 or 1
            assert 0.0 < found["hidden"].dead_fraction < 1.0
            assert 0.0 < found["probability"].saturated_fraction < 1.0
        assert measures[1:] == (None, None, None, [])

    def test_relu_layer_is_measured_and_leaky_relu_only_named(self):
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(UNITS, name="pre"),
                keras.layers.ReLU(name="rectifier"),
                keras.layers.Dense(UNITS, name="pre_leaky"),
                keras.layers.LeakyReLU(name="leaky"),
            ]
        )
        set_random_weights(model, seed=3)
        x = positive_batch(5)

        found = by_name(measure_activations(model, x))

        rectified = numpy_dense(model.layers[0], x, "relu")
        assert found["rectifier"] == LayerActivation(
            "rectifier", "relu", UNITS, dead_fraction(rectified), None, False, True, "pre"
        )
        assert 0.0 < found["rectifier"].dead_fraction < 1.0
        assert found["leaky"] == LayerActivation(
            "leaky", "leaky_relu", UNITS, None, None, True, True, "pre_leaky"
        )

    def test_weight_normalization_is_measured_with_the_wrapped_activation(self):
        wrapped = WeightNormalization(
            keras.layers.Dense(UNITS, activation="relu", name="inner"), name="normalized"
        )
        model = keras.Sequential([keras.Input((5,)), wrapped])
        x = positive_batch(5)
        paths = [w.path for w in wrapped.weights]
        weights = wrapped.get_weights()
        weights[paths.index(wrapped.layer.kernel.path)] = np.random.default_rng(13).normal(
            size=(5, UNITS)
        )
        weights[paths.index(wrapped.layer.bias.path)] = np.array([-50.0, 0, -50, 0, 0, 0])
        wrapped.set_weights(weights)

        # In training, the layer's first batch would re-center the outputs
        # (data-dependent initialization): measure in inference.
        (entry,) = measure_activations(model, x, training=False).layers

        output = keras.ops.convert_to_numpy(model(x, training=False))
        assert (entry.layer, entry.activation, entry.units) == ("normalized", "relu", UNITS)
        assert entry.dead_fraction == dead_fraction(output)
        assert 2 / UNITS <= entry.dead_fraction < 1.0

    @pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
    def test_conv2d_units_are_channels(self, data_format):
        shape = (5, 5, 3) if data_format == "channels_last" else (3, 5, 5)
        model = keras.Sequential(
            [
                keras.Input(shape),
                keras.layers.Conv2D(7, 3, activation="relu", data_format=data_format, name="conv"),
                keras.layers.Activation("relu", name="again"),
            ]
        )
        set_random_weights(model, seed=4)
        kernel, bias = model.layers[0].get_weights()
        bias[[2, 5]] = -50.0  # two channels dead; the others as the weights have them
        model.layers[0].set_weights([kernel, bias])
        x = positive_batch(*shape)

        found = by_name(measure_activations(model, x))

        channel_axis = -1 if data_format == "channels_last" else 1
        expected = dead_fraction(numpy_conv2d(model.layers[0], x), axis=channel_axis)
        assert found["conv"].units == 7
        assert found["conv"].dead_fraction == expected
        assert 2 / 7 <= expected < 1.0
        # A separate activation reads the channel axis of the layer it takes.
        assert found["again"].units == 7
        assert found["again"].dead_fraction == expected

    def test_recurrent_layers_are_measured_with_their_cell_activation(self):
        spy = Spy(name="spy")
        model = keras.Sequential(
            [
                keras.Input((5, 3)),
                keras.layers.SimpleRNN(UNITS, activation="relu", return_sequences=True, name="rnn"),
                keras.layers.SimpleRNN(UNITS, return_sequences=True, name="rnn_tanh"),
                IndRNN(UNITS, activation="relu", return_sequences=True, name="ind"),
                keras.layers.LSTM(3, return_sequences=True, name="gated"),
                keras.layers.TimeDistributed(
                    keras.layers.Dense(3, activation="sigmoid", name="per_step"), name="steps"
                ),
                spy,
            ]
        )
        set_random_weights(model, seed=5, scale=1.5)
        kernel, recurrent, bias = model.layers[2].get_weights()
        bias[[0, 3]] = -50.0  # the tanh input would keep every IndRNN unit alive
        model.layers[2].set_weights([kernel, recurrent, bias])
        every_layer = model._flatten_layers()
        spy.record.watched = every_layer
        x = positive_batch(5, 3)

        measures = measure_activations(model, x)

        weights = [[w.astype("float64") for w in layer.get_weights()] for layer in model.layers]
        h_relu = numpy_recurrence(x, *weights[0], "relu")
        h_tanh = numpy_recurrence(h_relu, *weights[1], "tanh")
        h_ind = numpy_recurrence(h_tanh, *weights[2], "relu", elementwise=True)
        found = by_name(measures)
        assert list(found) == ["rnn", "rnn_tanh", "ind", "per_step"]
        # Dead units are not judged in recurrent layers (see the module's
        # docstring); the ReLU outputs are still computed, and a note says so.
        assert found["rnn"] == LayerActivation("rnn", "relu", UNITS, None, None, False, False, None)
        assert found["rnn_tanh"] == LayerActivation(
            "rnn_tanh", "tanh", UNITS, None, saturated_fraction("tanh", h_tanh), False, False, None
        )
        assert found["ind"] == LayerActivation("ind", "relu", UNITS, None, None, False, False, None)
        assert 0.0 < dead_fraction(h_relu) < 1.0 and 0.0 < dead_fraction(h_ind) < 1.0
        assert any("rnn: dead units are not judged" in n for n in measures.notes)
        assert 0.0 < found["rnn_tanh"].saturated_fraction < 1.0
        # TimeDistributed runs its Dense once per step, and returns the model output.
        per_step = found["per_step"]
        assert (per_step.activation, per_step.units, per_step.is_output) == ("sigmoid", 3, True)
        assert 0.0 <= per_step.saturated_fraction <= 1.0
        # The LSTM's gates are not measured, and a note says so.
        assert [note.split(":")[0] for note in measures.notes] == ["rnn", "ind", "gated"]
        # Every layer but the cells was hooked during the pass; none is now.
        cells = {layer.cell.name for layer in model.layers[:4]}
        hooked = {"rnn", "rnn_tanh", "ind", "gated", "steps", "per_step", "spy"}
        assert hooked <= set(spy.record.hooked)
        assert not cells & set(spy.record.hooked)
        assert all("call" not in layer.__dict__ for layer in every_layer)

    def test_hooks_are_removed_when_the_forward_pass_fails(self):
        spy = Spy(name="spy")
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(UNITS, activation="relu"), spy]
        )
        spy.record.fail = True
        with pytest.raises(ValueError, match="fails here"):
            measure_activations(model, positive_batch(5))
        assert all("call" not in layer.__dict__ for layer in model._flatten_layers())

    def test_nested_sequential_in_a_functional_model(self):
        block = keras.Sequential(
            [
                keras.layers.Dense(3, name="inner_dense"),
                keras.layers.Activation("tanh", name="inner_tanh"),
            ],
            name="block",
        )
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(UNITS, activation="relu", name="outer")(inputs)
        model = keras.Model(inputs, block(hidden))
        rng = np.random.default_rng(8)
        for layer in (model.get_layer("outer"), block.layers[0]):
            layer.set_weights([1.5 * rng.normal(size=w.shape) for w in layer.get_weights()])
        x = positive_batch(5)

        measures = measure_activations(model, x)

        outer = numpy_dense(model.get_layer("outer"), x)
        tanh = numpy_dense(block.layers[0], outer, "tanh")
        assert [e.layer for e in measures.layers] == ["outer", "inner_dense", "inner_tanh"]
        found = by_name(measures)
        assert found["outer"].dead_fraction == dead_fraction(outer)
        assert not found["outer"].is_output
        assert found["inner_tanh"] == LayerActivation(
            "inner_tanh",
            "tanh",
            3,
            None,
            saturated_fraction("tanh", tanh),
            True,
            True,
            "inner_dense",
        )
        assert 0.0 < found["inner_tanh"].saturated_fraction < 1.0

    def test_subclassed_model(self):
        class TwoLayers(keras.Model):
            def __init__(self):
                super().__init__()
                self.hidden = keras.layers.Dense(UNITS, activation="relu", name="hidden")
                self.project = keras.layers.Dense(3, name="project")
                self.squash = keras.layers.Activation("sigmoid", name="squash")

            def call(self, inputs):
                return self.squash(self.project(self.hidden(inputs)))

        model = TwoLayers()
        x = positive_batch(5)
        model(x)
        rng = np.random.default_rng(9)
        for layer in (model.hidden, model.project):
            layer.set_weights([2.0 * rng.normal(size=w.shape) for w in layer.get_weights()])

        found = by_name(measure_activations(model, x))

        hidden = numpy_dense(model.hidden, x)
        squash = numpy_dense(model.project, hidden, "sigmoid")
        assert list(found) == ["hidden", "project", "squash"]
        assert found["hidden"].dead_fraction == dead_fraction(hidden)
        # No graph: the source is the layer whose output tensor the call took.
        assert found["squash"] == LayerActivation(
            "squash",
            "sigmoid",
            3,
            None,
            saturated_fraction("sigmoid", squash),
            True,
            True,
            "project",
        )

    def test_an_unbuilt_model_is_built_and_measured(self):
        model = keras.Sequential([keras.layers.Dense(UNITS, activation="relu", name="hidden")])
        measures = measure_activations(model, positive_batch(5))
        assert model.built
        assert [e.layer for e in measures.layers] == ["hidden"]

    def test_the_traced_pass_is_reused_and_reads_the_current_weights(self):
        # An eager pass costs several training steps on TensorFlow and JAX
        # (GradientBoard runs one at every check): the pass is traced once.
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(UNITS, name="hidden")(inputs)
        relu = keras.layers.ReLU(name="relu")(hidden)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="tanh", name="out")(relu))
        x = positive_batch(5)
        first = measure_activations(model, x)
        traced = _cache.get(model, "activations_pass")
        kernel, bias = model.get_layer("hidden").get_weights()
        bias[:2] = -50.0  # two units dead, for the next pass only
        model.get_layer("hidden").set_weights([kernel, bias])

        second = measure_activations(model, x)

        assert _cache.get(model, "activations_pass") is traced and traced.usable
        assert traced._function.trace_count == (0 if BACKEND == "torch" else 1)
        eager = activations._eager_measure(model, x, True)
        assert second == eager and second != first
        relu_found = by_name(second)["relu"]
        assert relu_found.source == "hidden"
        assert relu_found.dead_fraction == dead_fraction(numpy_dense(model.layers[1], x, "relu"))

    def test_diagnose_measures_the_activations_in_its_gradient_pass(self, monkeypatch):
        # `diagnose` reads the activations from the forward pass of the
        # weights' gradient, with no pass of their own (as NumPy says).
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(UNITS, name="hidden")(inputs)
        relu = keras.layers.ReLU(name="relu")(hidden)
        tanh = keras.layers.Dense(UNITS, activation="tanh", name="tanh")(relu)
        model = keras.Model(inputs, keras.layers.Dense(1, name="out")(tanh))
        model.compile(optimizer="sgd", loss="mse")
        x = positive_batch(5) * 3.0
        y = np.ones((BATCH, 1), "float32")
        kernel, bias = model.get_layer("hidden").get_weights()
        bias[:2] = -50.0  # two dead units
        model.get_layer("hidden").set_weights([kernel, bias])
        kernel, bias = model.get_layer("tanh").get_weights()
        kernel[:, :3] *= 8.0  # three units saturated on some rows
        model.get_layer("tanh").set_weights([kernel, bias])
        passes = []
        separate = activations.measure_activations
        monkeypatch.setattr(
            activations,
            "measure_activations",
            lambda *a, **k: passes.append(1) or separate(*a, **k),
        )

        reports = [gk.diagnose(model, x, y) for _ in range(2)]

        assert passes == []
        dead = dead_fraction(numpy_dense(model.get_layer("hidden"), x, "relu"))
        h = numpy_dense(model.get_layer("tanh"), numpy_dense(model.get_layer("hidden"), x, "relu"))
        saturated = float(np.mean(1.0 - h**2 < 0.01))
        assert dead == 2 / UNITS and 0.0 < saturated < 0.5
        for report in reports:
            assert report.measures["dead_units"] == {"relu": pytest.approx(dead)}
            assert report.measures["saturated_units"]["tanh"] == pytest.approx(saturated)

    def test_gradient_board_traces_the_pass_once_for_all_its_checks(self, tmp_path):
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(UNITS, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        x = positive_batch(5)
        y = np.ones((BATCH, 1), "float32")
        board = gk.callbacks.GradientBoard(tmp_path, probe=(x, y), write_plots=False)
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[board])
        traced = _cache.get(model, "activations_pass")
        assert traced.usable
        assert traced._function.trace_count == (0 if BACKEND == "torch" else 1)

    def test_gradient_board_without_a_batch_measures_the_first_one_it_trains_on(self, tmp_path):
        # No `probe`, no `time_probe`: the checks measure the first training
        # batch, read from the train function without changing the run.
        traces = []

        class Counted(keras.Sequential):
            def train_step(self, *args, **kwargs):
                traces.append(1)  # once per trace on TensorFlow and JAX, per step on PyTorch
                return super().train_step(*args, **kwargs)

        bias = np.zeros(UNITS, "float32")
        bias[:4] = -50.0  # four units dead on inputs in [0, 1)

        def fitted(callbacks):
            keras.utils.set_random_seed(4)
            hidden = keras.layers.Dense(UNITS, "relu", name="hidden")
            model = Counted([keras.Input((5,)), hidden, keras.layers.Dense(1)])
            hidden.bias.assign(bias)
            # Keras's PyTorch trainer takes one step per execution only.
            model.compile("sgd", "mse", steps_per_execution=1 if BACKEND == "torch" else 2)
            del traces[:]
            model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
            return model, len(traces)

        x = np.random.default_rng(0).uniform(size=(48, 5)).astype("float32")
        y = np.random.default_rng(1).normal(size=(48, 1)).astype("float32")
        plain, plain_traces = fitted([])
        board = gk.callbacks.GradientBoard(tmp_path, write_plots=False)
        with pytest.warns(gk.diagnostics.GradientWarning, match="dead_units"):
            model, board_traces = fitted([board])

        for expected, found in zip(plain.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(found, expected)
        assert board_traces == plain_traces
        dead = {f.kind: f for f in board.findings}["dead_units"]
        assert dead.where == "hidden"
        # The last check measured the first batch (`shuffle=False`) with the final weights.
        first = dead_fraction(numpy_dense(model.get_layer("hidden"), x[:16], "relu"))
        assert dead.value == pytest.approx(first) and first >= 4 / UNITS
        assert model.train_function is not None and "first_batch" not in repr(model.train_function)

    def test_a_fit_that_ends_before_its_first_step_leaves_no_reader_behind(self, tmp_path):
        # The board that waited for a batch never got one (no `on_train_end`
        # after an exception): the next board removes its reader.
        class Interrupted(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                raise RuntimeError("interrupted")

        bias = np.zeros(UNITS, "float32")
        bias[:4] = -50.0
        hidden = keras.layers.Dense(UNITS, "relu", name="hidden")
        model = keras.Sequential([keras.Input((5,)), hidden, keras.layers.Dense(1)])
        hidden.bias.assign(bias)
        model.compile("sgd", "mse")
        x = np.random.default_rng(0).uniform(size=(16, 5)).astype("float32")
        y = np.zeros((16, 1), "float32")
        first = gk.callbacks.GradientBoard(tmp_path / "first", write_plots=False)
        with pytest.raises(RuntimeError, match="interrupted"):
            model.fit(x, y, batch_size=16, verbose=0, callbacks=[first, Interrupted()])
        assert hasattr(model.train_function, "_gradkit_plain")  # left behind

        second = gk.callbacks.GradientBoard(tmp_path / "second", write_plots=False)
        with pytest.warns(gk.diagnostics.GradientWarning, match="dead_units"):
            model.fit(x, y, batch_size=16, verbose=0, callbacks=[second])
        assert not hasattr(model.train_function, "_gradkit_plain")
        model.fit(x, y, batch_size=16, verbose=0)
        assert not hasattr(model.train_function, "_gradkit_plain")

    @pytest.mark.parametrize("activation", ["relu", "relu6"])
    def test_units_dead_by_their_bias_give_the_exact_fraction(self, activation):
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(UNITS, activation=activation, name="hidden")]
        )
        kernel = np.random.default_rng(10).uniform(0.1, 1.0, size=(5, UNITS))
        bias = np.ones(UNITS)
        bias[[1, 4]] = -100.0
        model.layers[0].set_weights([kernel, bias])

        (entry,) = measure_activations(model, positive_batch(5)).layers

        assert (entry.activation, entry.dead_fraction) == (activation, 2 / UNITS)

    def test_large_weights_saturate_tanh_as_numpy_says(self):
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(UNITS, activation="tanh", name="squash")]
        )
        rng = np.random.default_rng(11)
        model.layers[0].set_weights([4.0 * rng.normal(size=(5, UNITS)), rng.normal(size=UNITS)])
        x = positive_batch(5)

        (entry,) = measure_activations(model, x).layers

        expected = saturated_fraction("tanh", numpy_dense(model.layers[0], x))
        assert entry.saturated_fraction == expected
        assert 0.3 < expected < 1.0

    def test_shared_layer_is_measured_over_all_its_calls(self):
        shared = keras.layers.Dense(UNITS, activation="relu", name="shared")
        left, right = keras.Input((5,)), keras.Input((5,))
        merged = keras.layers.Concatenate()([shared(left), shared(right)])
        model = keras.Model([left, right], keras.layers.Dense(3)(merged))
        # Columns 0-1 fire on positive inputs only, 2-3 on negative ones, 4-5 never.
        kernel = np.concatenate([np.ones((5, 2)), -np.ones((5, 2)), np.zeros((5, 2))], axis=1)
        shared.set_weights([kernel, np.array([0.0, 0, 0, 0, -1, -1])])
        x = positive_batch(5) + 0.1

        found = by_name(measure_activations(model, [x, -x]))

        assert found["shared"].dead_fraction == 2 / 6  # the first call alone: 4 / 6
        assert dead_fraction(numpy_dense(shared, x)) == 4 / 6

    def test_first_non_finite_layer_is_named_with_its_activation_and_initializer(self):
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(UNITS, activation="relu", name="first"),
                keras.layers.Dense(
                    UNITS,
                    activation="exponential",
                    kernel_initializer=keras.initializers.RandomNormal(stddev=100.0),
                    name="blowup",
                ),
                keras.layers.Dense(3, activation="exponential", name="after"),
            ]
        )
        model.layers[0].set_weights([np.full((5, UNITS), 0.5), np.zeros(UNITS)])
        model.layers[1].set_weights([np.full((UNITS, UNITS), 100.0), np.zeros(UNITS)])

        measures = measure_activations(model, positive_batch(5) + 0.5)

        assert measures.non_finite_layer == "blowup"
        assert measures.non_finite_activation == "exponential"
        assert measures.non_finite_initializer == "RandomNormal"
        assert [e.layer for e in measures.layers] == ["first", "blowup", "after"]

    def test_separate_non_finite_activation_names_its_source_initializer(self):
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(UNITS, kernel_initializer="he_normal", name="pre"),
                keras.layers.Activation("exponential", name="exp"),
            ]
        )
        model.layers[0].set_weights([np.full((5, UNITS), 100.0), np.zeros(UNITS)])

        measures = measure_activations(model, positive_batch(5) + 0.5)

        assert measures[1:4] == ("exp", "exponential", "HeNormal")

    def test_no_variable_changes(self):
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(UNITS, activation="relu"),
                keras.layers.BatchNormalization(name="norm"),
                keras.layers.Dropout(0.5, seed=3),
                keras.layers.Dense(3, activation="sigmoid"),
            ]
        )
        x = positive_batch(5) * 10.0
        norm = model.get_layer("norm")
        before = snapshot(model)

        measure_activations(model, x, training=True)

        after = snapshot(model)
        assert after.keys() == before.keys()
        assert any("seed_generator" in path for path in before)
        for path, value in before.items():
            np.testing.assert_array_equal(after[path], value, err_msg=path)
        # A plain training call does move the statistics the measure kept.
        model(x, training=True)
        moving_mean = keras.ops.convert_to_numpy(norm.moving_mean)
        assert not np.array_equal(moving_mean, before[norm.moving_mean.path])

    def test_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model = keras.Sequential(
                [
                    keras.Input((5,)),
                    keras.layers.Dense(UNITS, activation="relu", name="hidden"),
                    keras.layers.Dense(3, name="logits"),
                    keras.layers.Activation("sigmoid", dtype="float32", name="probability"),
                ]
            )
            set_random_weights(model, seed=12, scale=2.0)
            kernel, bias = model.layers[0].get_weights()
            bias[[1, 4]] = -50.0
            model.layers[0].set_weights([kernel, bias])
            kernel, bias = model.layers[1].get_weights()
            model.layers[1].set_weights([3.0 * kernel, bias])  # some sigmoids saturate
            x = positive_batch(5)

            found = by_name(measure_activations(model, x))

            # The same float16 computation, read through a sub-model.
            names = ["hidden", "probability"]
            outputs = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])(x)
        finally:
            keras.config.set_dtype_policy("float32")
        hidden, probability = (
            keras.ops.convert_to_numpy(keras.ops.cast(o, "float32")) for o in outputs
        )
        assert keras.backend.standardize_dtype(outputs[0].dtype) == "float16"
        assert found["hidden"].dead_fraction == dead_fraction(hidden)
        assert 2 / UNITS <= found["hidden"].dead_fraction < 1.0
        assert found["probability"].saturated_fraction == float(
            np.mean(probability * (1 - probability) < 0.0025)
        )
        assert 0.0 < found["probability"].saturated_fraction < 1.0
        # The float32 activation takes a cast of the logits: its source still shows.
        assert found["probability"].source == "logits"
