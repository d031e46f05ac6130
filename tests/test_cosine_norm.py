"""Tests for keras_gradkit.layers.CosineDense, CosineConv1D and CosineConv2D."""

import inspect
import itertools
import math

import keras
import numpy as np
import pytest

from keras_gradkit.layers import CosineConv1D, CosineConv2D, CosineDense, GroupNorm
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

EPSILON = 1e-7


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _weighted_sum_gradients(layer, x, weights):
    """Gradients of sum(layer(x) * weights) w.r.t. x and the trainable weights."""
    weights = keras.ops.convert_to_tensor(np.asarray(weights, "float32"))

    def loss(x):
        return keras.ops.sum(keras.ops.multiply(layer(x), weights))

    _, (grad_x,), grad_w = value_and_gradients(loss, [x], layer.trainable_weights)
    return grad_x, grad_w


def reference_cosine(x, w, b=None, scale=1.0, centered=False, epsilon=EPSILON):
    """Luo et al. (2017), eq. (4)-(5): one input vector against one weight
    vector; the bias is a weight on a constant input 1."""
    x = np.asarray(x, np.float64).ravel()
    w = np.asarray(w, np.float64).ravel()
    if centered:
        x = x - x.mean()
        w = w - w.mean()
    dot, x_sq, w_sq = x @ w, x @ x, w @ w
    if b is not None:
        dot, x_sq, w_sq = dot + b, x_sq + 1.0, w_sq + b * b
    return scale * dot / (math.sqrt(x_sq + epsilon) * math.sqrt(w_sq + epsilon))


def reference_dense(x, kernel, bias=None, **kwargs):
    flat = x.reshape(-1, x.shape[-1])
    out = np.array(
        [
            [
                reference_cosine(row, kernel[:, j], None if bias is None else bias[j], **kwargs)
                for j in range(kernel.shape[1])
            ]
            for row in flat
        ]
    )
    return out.reshape(x.shape[:-1] + (kernel.shape[1],))


def _padded(x, kernel_size, strides, dilation, padding):
    """Zero-pads a channels-last input as TensorFlow does; returns it and the
    output spatial shape."""
    pads, out_shape = [(0, 0)], []
    for size, k, s, d in zip(x.shape[1:-1], kernel_size, strides, dilation):
        effective = (k - 1) * d + 1
        if padding == "valid":
            pads.append((0, 0))
            out_shape.append((size - effective) // s + 1)
        elif padding == "causal":
            pads.append((effective - 1, 0))
            out_shape.append(size)
        else:
            out = -(-size // s)
            total = max((out - 1) * s + effective - size, 0)
            pads.append((total // 2, total - total // 2))
            out_shape.append(out)
    return np.pad(x, pads + [(0, 0)]), out_shape


def reference_conv(x, kernel, bias, strides, dilation, padding, **kwargs):
    """Patch by patch: the cosine between each filter and each input patch."""
    kernel_size = kernel.shape[:-2]
    x, out_shape = _padded(x, kernel_size, strides, dilation, padding)
    out = np.zeros((x.shape[0],) + tuple(out_shape) + (kernel.shape[-1],))
    for n in range(x.shape[0]):
        for position in itertools.product(*[range(o) for o in out_shape]):
            index = tuple(
                slice(p * s, p * s + (k - 1) * d + 1, d)
                for p, s, k, d in zip(position, strides, kernel_size, dilation)
            )
            patch = x[(n,) + index]
            for j in range(kernel.shape[-1]):
                b = None if bias is None else bias[j]
                out[(n,) + position + (j,)] = reference_cosine(patch, kernel[..., j], b, **kwargs)
    return out


def _randomize(layer, rng):
    """Non-symmetric random weights (bias and kernel), returned as NumPy."""
    weights = [rng.normal(size=w.shape).astype("float32") + 0.3 for w in layer.trainable_weights]
    for variable, value in zip(layer.trainable_weights, weights):
        if variable.path.endswith("scale"):
            continue
        variable.assign(value)
    kernel = layer.kernel.numpy()
    bias = None if layer.bias is None else layer.bias.numpy()
    return kernel, bias


class TestCosineDense:
    @pytest.mark.parametrize(
        "use_bias, centered, scale, shape",
        [
            (False, False, 1.0, (3, 5)),
            (True, False, 2.5, (3, 5)),
            (False, True, -1.5, (2, 3, 5)),
            (True, True, 4.0, (2, 2, 2, 5)),
        ],
    )
    def test_matches_numpy_reference(self, use_bias, centered, scale, shape):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=shape) + 0.5).astype("float32")
        layer = CosineDense(4, use_bias=use_bias, centered=centered, scale=scale)
        layer.build(shape)
        kernel, bias = _randomize(layer, rng)
        expected = reference_dense(x, kernel, bias, scale=scale, centered=centered)
        np.testing.assert_allclose(_np(layer(x)), expected, atol=1e-5, rtol=1e-4)

    def test_learned_scale_is_trainable_and_used(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 3)).astype("float32")
        layer = CosineDense(2, learn_scale=True, scale=3.0, use_bias=True)
        layer.build(x.shape)
        kernel, bias = _randomize(layer, rng)
        assert [w.path.split("/")[-1] for w in layer.trainable_weights] == [
            "kernel",
            "bias",
            "scale",
        ]
        assert float(layer.scale_weight.numpy()) == 3.0
        layer.scale_weight.assign(-7.0)
        np.testing.assert_allclose(
            _np(layer(x)), reference_dense(x, kernel, bias, scale=-7.0), atol=1e-5
        )
        _, (_, _, grad) = _weighted_sum_gradients(layer, x, np.arange(2.0))
        np.testing.assert_allclose(
            grad, (reference_dense(x, kernel, bias) * np.arange(2.0)).sum(), rtol=1e-4
        )

    def test_bounded_and_scale_invariant(self):
        rng = np.random.default_rng(2)
        x = (rng.normal(size=(64, 6)) * 1e3).astype("float32")
        x[0] = 1e3  # parallel to an all-positive weight below
        layer = CosineDense(3, scale=2.0)
        layer.build(x.shape)
        layer.kernel.assign(np.abs(rng.normal(size=(6, 3))).astype("float32"))
        layer.kernel.assign(np.concatenate([np.ones((6, 1)), layer.kernel.numpy()[:, 1:]], axis=1))
        y = keras.ops.convert_to_numpy(layer(x))
        assert np.all(np.abs(y) <= 2.0 * (1 + 1e-6))
        assert y[0, 0] == pytest.approx(2.0, rel=1e-6)
        np.testing.assert_allclose(_np(layer(x * 1e-3)), y, atol=1e-5)

    def test_zero_input_finite_output_and_gradients(self):
        for layer in (
            CosineDense(3),
            CosineDense(3, use_bias=True, centered=True, learn_scale=True),
        ):
            x = np.zeros((2, 4), "float32")
            np.testing.assert_array_equal(_np(layer(x)), 0.0)
            grad_x, grad_w = _weighted_sum_gradients(layer, x, [1.0, -2.0, 3.0])
            for g in [grad_x] + grad_w:
                assert np.all(np.isfinite(g))

    def test_run_layer_test(self, tmp_path):
        x = np.random.default_rng(3).normal(size=(2, 3, 4)).astype("float32")
        run_layer_test(
            CosineDense,
            {"units": 5, "use_bias": True, "learn_scale": True, "activation": "tanh"},
            x,
            expected_output_shape=(2, 3, 5),
            expected_num_trainable_weights=3,
            tmp_path=tmp_path,
        )

    @pytest.mark.parametrize(
        "kwargs, name, error",
        [
            ({"units": 0}, "units", ValueError),
            ({"units": 2.0}, "units", TypeError),
            ({"units": 2, "scale": 0.0}, "scale", ValueError),
            ({"units": 2, "scale": "big"}, "scale", TypeError),
            ({"units": 2, "scale": float("inf")}, "scale", ValueError),
            ({"units": 2, "epsilon": 0.0}, "epsilon", ValueError),
            ({"units": 2, "use_bias": 1}, "use_bias", TypeError),
            ({"units": 2, "learn_scale": "yes"}, "learn_scale", TypeError),
            ({"units": 2, "centered": None}, "centered", TypeError),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_arguments(self, kwargs, name, error):
        with pytest.raises(error, match=name):
            CosineDense(**kwargs)

    @pytest.mark.backend_free
    def test_unknown_input_dimension(self):
        with pytest.raises(ValueError, match=r"input_shape=\(None, 3, None\)"):
            CosineDense(2)(keras.Input((3, None)))


CONV_CASES = [
    # rank, padding, strides, dilation, use_bias, centered
    (1, "valid", 1, 1, False, False),
    (1, "same", 2, 1, True, False),
    (1, "causal", 1, 2, False, True),
    (1, "valid", 3, 1, True, True),
    (2, "valid", 1, 1, False, False),
    (2, "same", 2, 1, True, False),
    (2, "same", 1, 2, False, True),
    (2, "valid", (2, 1), 1, True, True),
    (2, "same", 1, 1, True, True),
]


def _conv_layer(rank, **kwargs):
    return (CosineConv1D if rank == 1 else CosineConv2D)(**kwargs)


class TestCosineConv:
    @pytest.mark.parametrize("rank, padding, strides, dilation, use_bias, centered", CONV_CASES)
    def test_matches_patch_by_patch_reference(
        self, rank, padding, strides, dilation, use_bias, centered
    ):
        rng = np.random.default_rng(4)
        shape = (2, 7, 3) if rank == 1 else (2, 6, 5, 2)
        kernel_size = 3 if rank == 1 else (3, 2)
        x = (rng.normal(size=shape) + 0.4).astype("float32")
        layer = _conv_layer(
            rank,
            filters=3,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation,
            use_bias=use_bias,
            centered=centered,
            scale=1.5,
        )
        layer.build(shape)
        kernel, bias = _randomize(layer, rng)
        expected = reference_conv(
            x,
            kernel,
            bias,
            layer.strides,
            layer.dilation_rate,
            padding,
            scale=1.5,
            centered=centered,
        )
        got = keras.ops.convert_to_numpy(layer(x))
        assert got.shape == expected.shape == layer.compute_output_shape(shape)
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)

    @pytest.mark.parametrize("rank", [1, 2])
    def test_channels_first_matches_channels_last(self, rank):
        rng = np.random.default_rng(5)
        shape = (2, 6, 3) if rank == 1 else (2, 5, 4, 3)
        x = rng.normal(size=shape).astype("float32")
        kwargs = dict(filters=4, kernel_size=2, padding="same", use_bias=True)
        last = _conv_layer(rank, **kwargs)
        first = _conv_layer(rank, data_format="channels_first", **kwargs)
        last.build(shape)
        _randomize(last, rng)
        x_first = np.moveaxis(x, -1, 1)
        first.build(x_first.shape)
        first.set_weights(last.get_weights())
        y_first = keras.ops.convert_to_numpy(first(x_first))
        assert y_first.shape == first.compute_output_shape(x_first.shape)
        np.testing.assert_allclose(np.moveaxis(y_first, 1, -1), _np(last(x)), atol=1e-6)

    def test_bounded_by_scale_for_large_inputs(self):
        rng = np.random.default_rng(6)
        x = (rng.normal(size=(4, 8, 8, 3)) * 1e4).astype("float32")
        layer = CosineConv2D(5, 3, padding="same", scale=-3.0, use_bias=True)
        y = keras.ops.convert_to_numpy(layer(x))
        assert np.all(np.abs(y) <= 3.0 * (1 + 1e-5))
        assert np.abs(y).max() > 0.3

    @pytest.mark.parametrize("rank", [1, 2])
    def test_zero_input_finite_output_and_gradients(self, rank):
        shape = (2, 5, 2) if rank == 1 else (2, 4, 4, 2)
        layer = _conv_layer(
            rank, filters=3, kernel_size=2, padding="same", use_bias=True, centered=True
        )
        x = np.zeros(shape, "float32")
        np.testing.assert_array_equal(_np(layer(x)), 0.0)
        grad_x, grad_w = _weighted_sum_gradients(layer, x, [1.0, -2.0, 3.0])
        for g in [grad_x] + grad_w:
            assert np.all(np.isfinite(g))

    def test_mixed_precision_large_inputs(self):
        x = (np.random.default_rng(7).normal(size=(2, 6, 6, 3)) * 1e4).astype("float32")
        for policy in ("mixed_float16", "mixed_bfloat16"):
            layer = CosineConv2D(4, 3, padding="same", use_bias=True, dtype=policy)
            y = layer(x)
            assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
            y = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
            assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1.0 + 1e-2)

    def test_run_layer_test(self, tmp_path):
        rng = np.random.default_rng(8)
        run_layer_test(
            CosineConv1D,
            {"filters": 4, "kernel_size": 3, "padding": "causal", "use_bias": True},
            rng.normal(size=(2, 6, 3)).astype("float32"),
            expected_output_shape=(2, 6, 4),
            expected_num_trainable_weights=2,
        )
        run_layer_test(
            CosineConv2D,
            {"filters": 4, "kernel_size": (3, 2), "strides": 2, "learn_scale": True, "scale": 5.0},
            rng.normal(size=(2, 7, 6, 2)).astype("float32"),
            expected_output_shape=(2, 3, 3, 4),
            expected_num_trainable_weights=2,
            tmp_path=tmp_path,
        )

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"filters": 0, "kernel_size": 3}, "filters"),
            ({"filters": 2, "kernel_size": (3, 3, 3)}, "kernel_size"),
            ({"filters": 2, "kernel_size": 0}, "kernel_size"),
            ({"filters": 2, "kernel_size": 3, "strides": -1}, "strides"),
            ({"filters": 2, "kernel_size": 3, "padding": "causal"}, "padding"),
            ({"filters": 2, "kernel_size": 3, "padding": "full"}, "padding"),
            ({"filters": 2, "kernel_size": 3, "data_format": "NHWC"}, "data_format"),
            ({"filters": 2, "kernel_size": 3, "groups": 2}, "groups"),
            ({"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, "dilation_rate"),
            ({"filters": 2, "kernel_size": 3, "scale": 0}, "scale"),
            ({"filters": 2, "kernel_size": 3, "epsilon": -1.0}, "epsilon"),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_arguments(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            CosineConv2D(**kwargs)

    @pytest.mark.backend_free
    def test_unknown_channel_dimension(self):
        with pytest.raises(ValueError, match=r"input_shape=\(None, 5, 5, None\)"):
            CosineConv2D(2, 3)(keras.Input((5, 5, None)))


class TestCosineFamily:
    @pytest.mark.parametrize("cls", [CosineDense, CosineConv1D, CosineConv2D])
    @pytest.mark.backend_free
    def test_config_complete(self, cls):
        required = {"units": 3} if cls is CosineDense else {"filters": 3, "kernel_size": 2}
        layer = cls(
            **required,
            use_bias=True,
            scale=2.0,
            learn_scale=True,
            centered=True,
            epsilon=1e-5,
            activation="relu",
            kernel_regularizer="l2",
            bias_constraint="non_neg",
        )
        config = assert_config_round_trip(layer).get_config()
        signature = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert signature <= set(config)
        assert config["scale"] == 2.0 and config["centered"] and config["learn_scale"]

    def _model_with_every_layer(self):
        rng = np.random.default_rng(9)
        inputs = keras.Input((6, 6, 2))
        hidden = CosineConv2D(4, 3, padding="same", use_bias=True, centered=True)(inputs)
        hidden = GroupNorm(groups=2, beta_initializer="random_normal")(hidden)
        hidden = keras.layers.Reshape((9, 4))(keras.layers.MaxPooling2D(2)(hidden))
        hidden = CosineConv1D(3, 2, padding="causal", learn_scale=True, scale=4.0)(hidden)
        outputs = CosineDense(2, use_bias=True, activation="softmax")(
            keras.layers.Flatten()(hidden)
        )
        model = keras.Model(inputs, outputs)
        model.set_weights(
            [w + rng.normal(size=w.shape).astype("float32") * 0.1 for w in model.get_weights()]
        )
        return model, rng.normal(size=(3, 6, 6, 2)).astype("float32")

    def test_keras_file_of_a_model_with_every_layer(self, tmp_path):
        model, x = self._model_with_every_layer()
        assert_keras_file_round_trip(model, x, tmp_path)

    @pytest.mark.tensorflow_only
    def test_export_of_a_model_with_every_layer(self, tmp_path):
        model, x = self._model_with_every_layer()
        assert_export_serves(model, x, tmp_path)

    @pytest.mark.parametrize(
        "cls, keras_cls",
        [
            (CosineDense, keras.layers.Dense),
            (CosineConv1D, keras.layers.Conv1D),
            (CosineConv2D, keras.layers.Conv2D),
        ],
    )
    def test_positional_arguments_follow_the_keras_layer(self, cls, keras_cls):
        ours = [
            p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")
        ]
        theirs = [
            p
            for p in inspect.signature(keras_cls.__init__).parameters
            if p not in ("self", "kwargs")
        ]
        shared = [p for p in theirs if p in ours]
        # Every argument the two share sits at the same position, and the
        # shared ones come first.
        assert ours[: len(shared)] == shared
        assert shared == theirs[: len(shared)]
        assert len(shared) >= 10
        # The same positional call configures both the same way.
        args = {
            "units": 3,
            "filters": 3,
            "kernel_size": 2,
            "strides": 1,
            "padding": "same",
            "data_format": "channels_last",
            "dilation_rate": 1,
            "groups": 1,
            "activation": "relu",
            "use_bias": True,
            "kernel_initializer": "ones",
            "bias_initializer": "zeros",
            "kernel_regularizer": "l2",
            "bias_regularizer": "l1",
            "activity_regularizer": "l2",
            "kernel_constraint": "non_neg",
            "bias_constraint": "non_neg",
        }
        positional = [args[p] for p in shared]
        ours_config = cls(*positional).get_config()
        theirs_config = keras_cls(*positional).get_config()
        for name in shared:
            assert ours_config[name] == theirs_config[name], name
        # The example: the second positional argument is `activation`.
        if cls is CosineDense:
            assert CosineDense(10, "relu").get_config()["activation"] == "relu"

    @pytest.mark.parametrize(
        "cls, keras_cls, kwargs",
        [
            (CosineDense, keras.layers.Dense, {"units": 2}),
            (CosineConv1D, keras.layers.Conv1D, {"filters": 2, "kernel_size": 2}),
            (CosineConv2D, keras.layers.Conv2D, {"filters": 2, "kernel_size": 2}),
        ],
    )
    @pytest.mark.backend_free
    def test_masking_support_follows_the_keras_layer(self, cls, keras_cls, kwargs):
        assert cls(**kwargs).supports_masking == keras_cls(**kwargs).supports_masking

    def test_masking_cosine_dense_lstm_ignores_padding(self):
        inputs = keras.Input((None, 3))
        hidden = keras.layers.Masking(0.0)(inputs)
        hidden = CosineDense(4, "tanh", True)(hidden)
        outputs = keras.layers.LSTM(2, return_sequences=True)(hidden)
        model = keras.Model(inputs, outputs)
        rng = np.random.default_rng(10)
        real = (rng.normal(size=(2, 4, 3)) + 0.5).astype("float32")
        real[1, 2:] = 0.0  # the second sample has 2 real steps
        results = [_np(model(np.pad(real, ((0, 0), (0, pad), (0, 0))))) for pad in (0, 3, 8)]
        for other in results[1:]:
            np.testing.assert_allclose(other[0, :4], results[0][0, :4], atol=1e-6)
            np.testing.assert_allclose(other[1, :2], results[0][1, :2], atol=1e-6)
        # Masked steps repeat the last real output (Keras's LSTM with a mask).
        np.testing.assert_allclose(
            results[2][1, 2:], np.repeat(results[0][1, 1:2], 10, axis=0), atol=1e-6
        )
