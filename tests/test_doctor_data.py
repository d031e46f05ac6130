"""`keras_gradkit.diagnostics.data`: the scales of the inputs and regression
targets against NumPy, the inputs it leaves alone, and each mismatch of an
output and its loss flagged on a broken model and silent once it is fixed.
The premises the checks rest on (what Keras refuses, what it lets through)
are checked against the running backend."""

import keras
import numpy as np
import pytest

from keras_gradkit.diagnostics import data
from keras_gradkit.layers import GroupNorm

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
N = 16


def _sequential(*layers, features=4, dtype="float32", name="features"):
    return keras.Sequential([keras.Input((features,), dtype=dtype, name=name), *layers])


def _compiled(model, loss):
    model.compile(optimizer="sgd", loss=loss)
    return model


def _dense(units, activation=None, name="out"):
    return keras.layers.Dense(units, activation=activation, name=name)


def _rms(x, axis=None):
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=axis))


def _binary(shape=(N, 1)):
    return RNG.integers(0, 2, size=shape).astype("float32")


def _one_hot(width):
    return np.eye(width, dtype="float32")[RNG.integers(0, width, size=N)]


# ------------------------------------------------------------------ scales
class TestInputScales:
    def test_scales_match_numpy(self):
        x = RNG.normal(size=(N, 4)) * np.array([1.0, 3.0, 250.0, 0.1])
        model = _compiled(_sequential(_dense(1, "sigmoid")), "binary_crossentropy")
        scales, notes = data.input_scales(model, x, _binary())
        per_feature = _rms(x, axis=0)
        assert notes == []
        assert [s.name for s in scales] == ["features"]
        assert scales[0].feature == int(np.argmax(per_feature)) == 2
        np.testing.assert_allclose(scales[0].rms, per_feature.max(), rtol=1e-12)
        np.testing.assert_allclose(scales[0].overall_rms, _rms(x), rtol=1e-12)

    def test_pools_every_axis_but_the_last(self):
        x = RNG.uniform(0, 255, size=(3, 5, 5, 2)).astype("float32") * np.array([1.0, 0.5])
        model = keras.Sequential(
            [keras.Input((5, 5, 2)), keras.layers.Flatten(), _dense(1, "sigmoid")]
        )
        (scale,), _ = data.input_scales(model, x, None)
        np.testing.assert_allclose(scale.rms, _rms(x, axis=(0, 1, 2)).max(), rtol=1e-6)
        assert scale.feature == 0
        assert scale.name.startswith("input_layer")  # the InputLayer's name

    def test_non_finite_entries_are_left_out(self):
        x = RNG.normal(size=(N, 3)) * 10
        x[0, 0], x[1, 2], x[2, 1] = np.nan, np.inf, -np.inf
        model = _sequential(_dense(1), features=3)
        (scale,), _ = data.input_scales(model, x, None)
        finite = np.where(np.isfinite(x), x, np.nan)
        per_feature = np.sqrt(np.nanmean(finite**2, axis=0))
        np.testing.assert_allclose(scale.rms, per_feature.max(), rtol=1e-12)
        np.testing.assert_allclose(scale.overall_rms, np.sqrt(np.nanmean(finite**2)), rtol=1e-12)

    @pytest.mark.parametrize(
        "first",
        [
            lambda: keras.layers.Normalization(mean=0.0, variance=1.0),
            lambda: keras.layers.Rescaling(1 / 255),
            lambda: keras.layers.BatchNormalization(),
            lambda: keras.layers.LayerNormalization(),
            lambda: keras.layers.GroupNormalization(groups=2),
            lambda: GroupNorm(groups=2),
            lambda: keras.Sequential([keras.layers.Rescaling(1 / 255)]),
        ],
        ids=["normalization", "rescaling", "batch", "layer", "group", "our_group", "nested"],
    )
    def test_skips_an_input_normalized_first(self, first):
        model = _sequential(first(), _dense(1))
        scales, notes = data.input_scales(model, RNG.uniform(0, 255, size=(N, 4)), None)
        assert scales == []
        assert any("`features` not measured: it goes into" in note for note in notes)

    @pytest.mark.parametrize("dtype", ["int32", "float32"])
    def test_skips_token_ids_into_an_embedding(self, dtype):
        model = _sequential(
            keras.layers.Embedding(10, 3), keras.layers.Flatten(), _dense(1), dtype=dtype
        )
        scales, notes = data.input_scales(model, RNG.integers(0, 10, size=(N, 4)), None)
        assert scales == []
        assert any("into Embedding" in note for note in notes)

    @pytest.mark.parametrize("as_dict", [False, True])
    def test_functional_model_with_two_inputs(self, as_dict):
        a = keras.Input((3,), name="a")
        b = keras.Input((2,), name="b")
        normalized = keras.layers.Normalization(mean=0.0, variance=1.0)(a)
        out = _dense(1)(keras.layers.Concatenate()([normalized, b]))
        model = _compiled(keras.Model([a, b], out), "mse")
        x_a, x_b = RNG.normal(size=(N, 3)) * 100, RNG.normal(size=(N, 2)) * [1.0, 40.0]
        y = RNG.normal(size=(N, 1)) * 7 + 3
        x = {"b": x_b, "a": x_a} if as_dict else [x_a, x_b]
        scales, notes = data.input_scales(model, x, y)
        assert [s.name for s in scales] == ["b", "targets"]
        np.testing.assert_allclose(scales[0].rms, _rms(x_b, axis=0).max(), rtol=1e-12)
        assert scales[0].feature == 1
        np.testing.assert_allclose(scales[1].rms, _rms(y), rtol=1e-12)
        assert notes == [
            "Input `a` not measured: it goes into Normalization `normalization` first."
        ]

    def test_subclassed_model_measures_x_as_given(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(1)

            def call(self, inputs):
                return self.dense(inputs)

        model = _compiled(Subclassed(), keras.losses.MeanSquaredError())
        x = RNG.normal(size=(N, 3)) * 9
        scales, _ = data.input_scales(model, x, np.full((N, 1), 5.0))
        assert [s.name for s in scales] == ["x", "targets"]
        np.testing.assert_allclose(scales[0].rms, _rms(x, axis=0).max(), rtol=1e-12)
        np.testing.assert_allclose(scales[1].rms, 5.0)
        scales, notes = data.input_scales(model, RNG.integers(0, 9, size=(N, 3)), None)
        assert scales == [] and "integers" in notes[0]

    @pytest.mark.parametrize(
        "loss",
        ["mse", keras.losses.mean_absolute_error, keras.losses.Huber(), "log_cosh"],
        ids=["string", "function", "object", "log_cosh"],
    )
    def test_measures_regression_targets(self, loss):
        y = RNG.normal(size=(N, 2)) * [1.0, 1000.0]
        model = _compiled(_sequential(_dense(2)), loss)
        scales, _ = data.input_scales(model, RNG.normal(size=(N, 4)), y)
        assert [s.name for s in scales] == ["features", "targets"]
        assert scales[1].feature == 1
        np.testing.assert_allclose(scales[1].rms, _rms(y, axis=0).max(), rtol=1e-12)

    def test_leaves_classification_targets_alone(self):
        model = _compiled(_sequential(_dense(3, "softmax")), "sparse_categorical_crossentropy")
        scales, _ = data.input_scales(model, RNG.normal(size=(N, 4)), RNG.integers(0, 3, N))
        assert [s.name for s in scales] == ["features"]

    @pytest.mark.parametrize("as_list", [False, True])
    def test_multi_output_targets(self, as_list):
        inputs = keras.Input((4,), name="features")
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        model = keras.Model(
            inputs, [_dense(1, "sigmoid", "cls")(hidden), _dense(1, name="reg")(hidden)]
        )
        loss = (
            ["binary_crossentropy", "mse"]
            if as_list
            else {"cls": "binary_crossentropy", "reg": "mse"}
        )
        _compiled(model, loss)
        y_reg = RNG.normal(size=(N, 1)) * 30
        y = [_binary(), y_reg] if as_list else {"cls": _binary(), "reg": y_reg}
        scales, notes = data.input_scales(model, RNG.normal(size=(N, 4)), y)
        assert [s.name for s in scales] == ["features", "targets/reg"]
        np.testing.assert_allclose(scales[1].rms, _rms(y_reg), rtol=1e-12)
        assert notes == []

    def test_uncompiled_model_measures_inputs_only(self):
        scales, notes = data.input_scales(_sequential(_dense(1)), RNG.normal(size=(N, 4)), None)
        assert [s.name for s in scales] == ["features"]
        assert "not compiled" in notes[0]


# ------------------------------------------------------------- mismatches
def _case(layers, loss, y, features=4):
    return _compiled(_sequential(*layers, features=features), loss), y


LABELS = RNG.integers(0, 5, size=N)

# name: (problem, where, the broken model and targets, the same fixed)
CASES = {
    "softmax_one_unit": (
        "softmax_one_unit",
        "out",
        lambda: _case([_dense(1, "softmax")], "binary_crossentropy", _binary()),
        lambda: _case([_dense(1, "sigmoid")], "binary_crossentropy", _binary()),
    ),
    "softmax_one_unit_layer_regression": (
        "softmax_one_unit",
        "probabilities",
        lambda: _case([_dense(1), keras.layers.Softmax(name="probabilities")], "mse", _binary()),
        lambda: _case([_dense(1)], "mse", _binary()),
    ),
    "categorical_one_unit": (
        "categorical_one_unit",
        "out",
        lambda: _case([_dense(1, "sigmoid")], "categorical_crossentropy", _binary()),
        lambda: _case([_dense(1, "sigmoid")], "binary_crossentropy", _binary()),
    ),
    "sparse_one_unit": (
        "categorical_one_unit",
        "out",
        lambda: _case([_dense(1, "sigmoid")], "sparse_categorical_crossentropy", _binary((N,))),
        lambda: _case([_dense(2, "softmax")], "sparse_categorical_crossentropy", _binary((N,))),
    ),
    "sigmoid_into_logits": (
        "probabilities_as_logits",
        "out",
        lambda: _case(
            [_dense(1, "sigmoid")], keras.losses.BinaryCrossentropy(from_logits=True), _binary()
        ),
        lambda: _case([_dense(1)], keras.losses.BinaryCrossentropy(from_logits=True), _binary()),
    ),
    "softmax_layer_into_logits": (
        "probabilities_as_logits",
        "act",
        lambda: _case(
            [_dense(5), keras.layers.Activation("softmax", name="act")],
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            LABELS,
        ),
        lambda: _case(
            [_dense(5)], keras.losses.SparseCategoricalCrossentropy(from_logits=True), LABELS
        ),
    ),
    "linear_into_binary": (
        "unbounded_into_probability_loss",
        "out",
        lambda: _case([_dense(1)], "binary_crossentropy", _binary()),
        lambda: _case([_dense(1)], keras.losses.BinaryCrossentropy(from_logits=True), _binary()),
    ),
    "relu_into_categorical": (
        "unbounded_into_probability_loss",
        "out",
        lambda: _case([_dense(5, "relu")], keras.losses.categorical_crossentropy, _one_hot(5)),
        lambda: _case([_dense(5, "softmax")], keras.losses.categorical_crossentropy, _one_hot(5)),
    ),
    "linear_into_kl_divergence": (
        "unbounded_into_probability_loss",
        "out",
        lambda: _case([_dense(5)], "kl_divergence", _one_hot(5)),
        lambda: _case([_dense(5, "softmax")], "kl_divergence", _one_hot(5)),
    ),
    "labels_beyond_the_units": (
        "labels_out_of_range",
        "out",
        lambda: _case([_dense(3, "softmax")], "sparse_categorical_crossentropy", LABELS),
        lambda: _case([_dense(5, "softmax")], "sparse_categorical_crossentropy", LABELS),
    ),
    "negative_padding_labels": (
        "labels_out_of_range",
        "out",
        lambda: _case([_dense(5, "softmax")], "sparse_categorical_crossentropy", LABELS - 1),
        lambda: _case(
            [_dense(5, "softmax")],
            keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
            LABELS - 1,
        ),
    ),
    "binary_targets_minus_one_one": (
        "binary_targets_not_0_1",
        "out",
        lambda: _case([_dense(1, "sigmoid")], "binary_crossentropy", 2 * _binary() - 1),
        lambda: _case([_dense(1, "sigmoid")], "binary_crossentropy", _binary()),
    ),
    "sigmoid_regression": (
        "targets_outside_output_range",
        "out",
        lambda: _case([_dense(1, "sigmoid")], "mse", RNG.normal(size=(N, 1)) * 3),
        lambda: _case([_dense(1)], "mse", RNG.normal(size=(N, 1)) * 3),
    ),
    "relu_layer_regression": (
        "targets_outside_output_range",
        "re_lu",
        lambda: _case(
            [_dense(1), keras.layers.ReLU(name="re_lu")], "huber", RNG.normal(size=(N, 1))
        ),
        lambda: _case(
            [_dense(1), keras.layers.ReLU(name="re_lu")], "huber", RNG.uniform(size=(N, 1))
        ),
    ),
    "tanh_regression": (
        "targets_outside_output_range",
        "out",
        lambda: _case(
            [_dense(2, "tanh")], keras.losses.MeanAbsoluteError(), RNG.normal(size=(N, 2)) * 5
        ),
        lambda: _case(
            [_dense(2, "tanh")], keras.losses.MeanAbsoluteError(), RNG.uniform(-1, 1, (N, 2))
        ),
    ),
}


class TestOutputLossMismatches:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_broken_model_is_flagged_and_fixed_one_is_not(self, case):
        problem, where, broken, fixed = CASES[case]
        mismatches, notes = data.output_loss_mismatches(*broken())
        assert [(m.problem, m.where) for m in mismatches] == [(problem, where)], mismatches
        assert len(mismatches[0].message) < 300, len(mismatches[0].message)
        assert "`" in mismatches[0].message  # the fix, as Keras code
        assert notes == []
        assert data.output_loss_mismatches(*fixed()) == ([], [])

    def test_messages_spell_out_the_fix(self):
        def message(case):
            return data.output_loss_mismatches(*CASES[case][2]())[0][0].message

        assert "`y = (y + 1) / 2`" in message("binary_targets_minus_one_one")
        assert "`units=5`" in message("labels_beyond_the_units")
        assert "ignore_class=-1" in message("negative_padding_labels")
        assert "BinaryCrossentropy(from_logits=True)" in message("linear_into_binary")
        assert 'set `activation="sigmoid"`' in message("softmax_one_unit")
        assert "Set `activation=None`" in message("sigmoid_regression")
        # a separate activation layer is named, and the fix is on it
        assert "remove the `probabilities` layer" in message("softmax_one_unit_layer_regression")
        assert "Remove the `re_lu` layer" in message("relu_layer_regression")

    def test_multi_output_model_checks_each_output_with_its_loss(self):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        cls = _dense(1, None, "cls")(hidden)
        reg = _dense(1, "sigmoid", "reg")(hidden)
        model = keras.Model(inputs, {"c": cls, "r": reg})
        _compiled(model, {"c": "binary_crossentropy", "r": "mse"})
        y = {"c": _binary(), "r": RNG.uniform(size=(N, 1))}
        mismatches, notes = data.output_loss_mismatches(model, y)
        assert [(m.problem, m.where) for m in mismatches] == [
            ("unbounded_into_probability_loss", "cls")
        ]
        y["r"] = y["r"] * 10
        mismatches, _ = data.output_loss_mismatches(model, y)
        assert {m.where for m in mismatches} == {"cls", "reg"}
        assert notes == []

    def test_output_of_a_nested_model_names_its_layer(self):
        head = keras.Sequential(
            [keras.layers.Flatten(), _dense(1, "softmax", "inner")], name="head"
        )
        inputs = keras.Input((2, 2))
        model = _compiled(keras.Model(inputs, head(inputs)), "binary_crossentropy")
        mismatches, _ = data.output_loss_mismatches(model, _binary())
        assert [(m.problem, m.where) for m in mismatches] == [("softmax_one_unit", "inner")]

    def test_what_it_cannot_read_is_noted(self):
        custom = _compiled(_sequential(_dense(1, lambda t: t * 2)), "mse")
        mismatches, notes = data.output_loss_mismatches(custom, RNG.normal(size=(N, 1)))
        assert mismatches == [] and "activation not known" in notes[0]

        own_loss = _compiled(_sequential(_dense(1, "sigmoid")), lambda y, p: (y - p) ** 2)
        mismatches, notes = data.output_loss_mismatches(own_loss, RNG.normal(size=(N, 1)))
        assert mismatches == [] and "not known" in notes[0]

        class Subclassed(keras.Model):
            def call(self, inputs):
                return inputs

        subclassed = _compiled(Subclassed(), "binary_crossentropy")
        assert data.output_loss_mismatches(subclassed, _binary())[0] == []


class TestKerasPremises:
    """What the checks take from Keras 3, on the running backend."""

    def test_keras_refuses_class_indices_and_one_hot_into_the_wrong_loss(self):
        probabilities = np.full((N, 3), 1 / 3, "float32")
        indices = RNG.integers(0, 3, size=(N, 1))
        with pytest.raises(ValueError, match="same shape"):
            keras.losses.CategoricalCrossentropy()(indices, probabilities)
        with pytest.raises(ValueError, match="shape"):
            keras.losses.SparseCategoricalCrossentropy()(np.eye(3)[indices[:, 0]], probabilities)

    def test_single_unit_softmax_and_categorical_loss_are_constant(self):
        logits = keras.ops.convert_to_tensor(RNG.normal(size=(N, 1)).astype("float32"))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), 1.0)
        sigmoid = keras.ops.sigmoid(logits)
        loss = keras.losses.categorical_crossentropy(np.ones((N, 1), "float32"), sigmoid)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loss), 0.0, atol=1e-6)

    def test_probabilities_into_from_logits(self):
        logits = np.array([[2.0], [-1.0]], "float32")
        targets = np.array([[1.0], [0.0]], "float32")
        probabilities = keras.activations.sigmoid(keras.ops.convert_to_tensor(logits))
        loss = keras.losses.binary_crossentropy(targets, probabilities, from_logits=True)
        right = np.logaddexp(0.0, [-2.0, -1.0])
        twice = np.logaddexp(0.0, -keras.ops.convert_to_numpy(probabilities)[:, 0] * [1, -1])
        expected = right if BACKEND == "tensorflow" else twice  # TensorFlow reuses the logits
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loss), expected, rtol=1e-5)

    def test_probability_losses_clip_what_is_not_a_probability(self):
        outputs = np.array([[1.5], [40.0]], "float32")
        loss = keras.losses.binary_crossentropy(np.zeros((2, 1), "float32"), outputs)
        loss = keras.ops.convert_to_numpy(loss)
        assert np.isfinite(loss).all() and loss[0] == loss[1]  # both clipped to 1 - epsilon

    def test_out_of_range_sparse_labels(self):
        probabilities = np.full((2, 3), 1 / 3, "float32")
        labels = np.array([1, 5])
        if BACKEND == "jax":  # silently: the label's one-hot row is zero
            loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(loss), [np.log(3), 0.0], rtol=1e-5
            )
        else:
            with pytest.raises(Exception, match="(?i)out of bounds|range"):
                keras.losses.sparse_categorical_crossentropy(labels, probabilities)

    def test_binary_targets_outside_0_1(self):
        targets = np.array([[-1.0], [1.0]], "float32")
        outputs = np.array([[0.3], [0.6]], "float32")
        if BACKEND == "torch":  # PyTorch's own binary_cross_entropy refuses them
            with pytest.raises(RuntimeError, match="between 0 and 1"):
                keras.losses.binary_crossentropy(targets, outputs)
        else:
            loss = keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(targets, outputs))
            assert loss[0] < 0  # unbounded below


class TestRefusedTargets:
    """The hint `diagnose` adds to Keras's shape error: only where the other
    loss is the fix."""

    def test_class_indices_into_categorical_names_the_sparse_loss(self):
        model = _compiled(_sequential(_dense(3, "softmax")), "categorical_crossentropy")
        hint = data.refused_targets(model, np.array([[0], [2], [1]]))
        assert 'loss="sparse_categorical_crossentropy"' in hint and "(0..2)" in hint

    def test_one_hot_into_sparse_names_the_categorical_loss(self):
        model = _compiled(_sequential(_dense(3, "softmax")), "sparse_categorical_crossentropy")
        hint = data.refused_targets(model, np.eye(3, dtype="float32")[[0, 2, 1]])
        assert 'loss="categorical_crossentropy"' in hint

    @pytest.mark.parametrize(
        "loss,targets",
        [
            # The focal loss's fix is not the sparse loss (it would drop the focal term).
            ("categorical_focal_crossentropy", np.array([[0], [2], [1]])),
            # Indices beyond the output's units: not class indices of this output.
            ("categorical_crossentropy", np.array([[0], [5], [1]])),
            # Not integers.
            ("categorical_crossentropy", np.array([[0.5], [2.0], [1.0]])),
            # Rows that are not one-hot.
            ("sparse_categorical_crossentropy", np.ones((3, 3), "float32")),
        ],
    )
    def test_no_hint_where_the_other_loss_is_not_the_fix(self, loss, targets):
        model = _compiled(_sequential(_dense(3, "softmax")), loss)
        assert data.refused_targets(model, targets) == ""

    def test_no_hint_for_sparse_labels_of_a_sequence_output(self):
        # (N, T, C) with T == C: sparse labels of shape (N, T) that look one-hot are fine.
        model = keras.Sequential([keras.Input((3, 2)), _dense(3, "softmax")])
        _compiled(model, "sparse_categorical_crossentropy")
        assert data.refused_targets(model, np.eye(3, dtype="float32")[[0, 2, 1]]) == ""

    def test_no_hint_and_no_error_for_targets_it_cannot_read(self):
        model = _compiled(_sequential(_dense(3, "softmax")), "categorical_crossentropy")
        assert data.refused_targets(model, [[0], [1, 2]]) == ""  # ragged
        assert data.refused_targets(model, None) == ""
