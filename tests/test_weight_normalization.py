"""Tests for keras_gradkit.layers.WeightNormalization."""

import itertools
import os

import keras
import numpy as np
import pytest

from keras_gradkit._gradients import value_and_gradients
from keras_gradkit.layers import WeightNormalization
from tests.layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def reference_direction(v, unit_axis=-1):
    """Salimans & Kingma (2016), eq. (2): v / ||v|| for each output unit."""
    v = np.asarray(v, np.float64)
    axes = tuple(i for i in range(v.ndim) if i != unit_axis % v.ndim)
    return v / np.sqrt(np.sum(v * v, axis=axes, keepdims=True))


def reference_dense(x, v, g, b):
    return np.asarray(x, np.float64) @ (reference_direction(v) * g) + b


def reference_conv2d_valid(x, kernel, bias, strides):
    """Channels-last 'valid' 2D convolution, position by position."""
    kh, kw, _, filters = kernel.shape
    sh, sw = strides
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for n, i, j in itertools.product(range(x.shape[0]), range(out_h), range(out_w)):
        patch = x[n, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
        out[n, i, j] = np.tensordot(patch, kernel, axes=3) + bias
    return out


def _randomize(wrapper, rng):
    """Non-symmetric kernel, bias and g; returns them as NumPy."""
    layer = wrapper.layer
    v = (rng.normal(size=layer.kernel.shape) + 0.3).astype("float32")
    layer.kernel.assign(v)
    b = rng.normal(size=layer.bias.shape).astype("float32")
    layer.bias.assign(b)
    g = rng.uniform(0.5, 2.0, size=wrapper.g.shape).astype("float32")
    wrapper.g.assign(g)
    return v, b, g


def _dense_model(data_init=True, units=3, features=4):
    inputs = keras.Input((features,))
    hidden = WeightNormalization(keras.layers.Dense(units), data_init=data_init)(inputs)
    outputs = keras.layers.Dense(1)(hidden)
    return keras.Model(inputs, outputs)


class TestWeightNormalization:
    def test_dense_matches_numpy_reference(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 4)).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(3, activation="tanh"), data_init=False)
        wrapper.build(x.shape)
        v, b, g = _randomize(wrapper, rng)
        expected = np.tanh(reference_dense(x, v, g, b))
        np.testing.assert_allclose(_np(wrapper(x)), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(_np(wrapper(x, training=True)), expected, atol=1e-5, rtol=1e-5)

    def test_conv2d_matches_numpy_reference(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 6, 5, 2)).astype("float32")
        wrapper = WeightNormalization(
            keras.layers.Conv2D(3, (3, 2), strides=(1, 2)), data_init=False
        )
        wrapper.build(x.shape)
        v, b, g = _randomize(wrapper, rng)
        kernel = reference_direction(v) * g
        expected = reference_conv2d_valid(x.astype(np.float64), kernel, b, (1, 2))
        got = _np(wrapper(x))
        assert got.shape == expected.shape == tuple(wrapper.compute_output_shape(x.shape))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize(
        "make_layer, shape",
        [
            (lambda: keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (2, 7, 2)),
            (lambda: keras.layers.Conv1D(4, 2, strides=2, groups=2), (2, 6, 2)),
            (lambda: keras.layers.Conv3D(2, 2, padding="same"), (1, 3, 4, 3, 2)),
            (lambda: keras.layers.Conv2DTranspose(3, 2, strides=2), (2, 3, 3, 2)),
            (lambda: keras.layers.Conv1DTranspose(2, 3, padding="same"), (2, 5, 3)),
        ],
    )
    def test_equals_wrapped_layer_with_normalized_kernel(self, make_layer, shape):
        """For every supported layer: the wrapper's output is the layer's own
        output for the kernel g * v / ||v||, with the unit axis of that layer."""
        rng = np.random.default_rng(2)
        x = rng.normal(size=shape).astype("float32")
        wrapper = WeightNormalization(make_layer(), data_init=False)
        wrapper.build(x.shape)
        v, _, g = _randomize(wrapper, rng)
        unit_axis = -2 if "Transpose" in type(wrapper.layer).__name__ else -1
        shape_g = [1] * v.ndim
        shape_g[unit_axis] = -1
        expected_kernel = (reference_direction(v, unit_axis) * g.reshape(shape_g)).astype("float32")
        got = _np(wrapper(x))
        wrapper.layer.kernel.assign(expected_kernel)
        np.testing.assert_allclose(got, _np(wrapper.layer(x)), atol=1e-5, rtol=1e-5)

    def test_starts_as_the_wrapped_layer(self):
        x = np.random.default_rng(3).normal(size=(4, 5)).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(3))
        y = _np(wrapper(x))
        np.testing.assert_allclose(y, _np(wrapper.layer(x)), atol=1e-6)
        np.testing.assert_allclose(
            _np(wrapper.g), np.linalg.norm(_np(wrapper.layer.kernel), axis=0), rtol=1e-6
        )

    def test_output_unchanged_when_v_is_scaled(self):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
        wrapper = WeightNormalization(keras.layers.Conv2D(3, 2), data_init=False)
        wrapper.build(x.shape)
        v, _, _ = _randomize(wrapper, rng)
        before = _np(wrapper(x))
        wrapper.layer.kernel.assign(v * np.array([0.01, 7.0, 300.0], "float32"))
        np.testing.assert_allclose(_np(wrapper(x)), before, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("conv", [False, True])
    def test_gradient_wrt_v_is_orthogonal_to_v(self, conv):
        rng = np.random.default_rng(5)
        layer = keras.layers.Conv2D(3, 2) if conv else keras.layers.Dense(3, activation="tanh")
        x = rng.normal(size=(2, 4, 4, 2) if conv else (6, 4)).astype("float32")
        wrapper = WeightNormalization(layer, data_init=False)
        wrapper.build(x.shape)
        v, _, _ = _randomize(wrapper, rng)
        weights = rng.normal(size=tuple(wrapper.compute_output_shape(x.shape))).astype("float32")

        def loss(x):
            return keras.ops.sum(keras.ops.multiply(wrapper(x), weights))

        _, _, (grad_v, grad_g) = value_and_gradients(loss, [x], [wrapper.layer.kernel, wrapper.g])
        per_unit_dot = np.sum(grad_v * v, axis=tuple(range(v.ndim - 1)))
        per_unit_scale = np.linalg.norm(grad_v.reshape(-1, 3), axis=0) * np.linalg.norm(
            v.reshape(-1, 3), axis=0
        )
        assert np.all(per_unit_scale > 1e-3)
        np.testing.assert_allclose(per_unit_dot / per_unit_scale, 0.0, atol=1e-5)
        assert np.all(np.abs(grad_g) > 0)

    def test_data_init_standardizes_first_batch_only(self):
        rng = np.random.default_rng(6)
        first = (rng.normal(size=(32, 4)) * 3 + 2).astype("float32")
        second = (rng.normal(size=(32, 4)) * 5 - 1).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(3, activation="relu"))
        wrapper.build(first.shape)
        v = _np(wrapper.layer.kernel)
        assert not bool(_np(wrapper.initialized))
        _np(wrapper(first))  # inference does not initialize
        assert not bool(_np(wrapper.initialized))
        y = _np(wrapper(first, training=True))
        t = first.astype(np.float64) @ reference_direction(v)
        expected = np.maximum((t - t.mean(0)) / t.std(0), 0.0)
        np.testing.assert_allclose(y, expected, atol=1e-4)
        assert bool(_np(wrapper.initialized))
        offsets = [_np(wrapper.g_offset), _np(wrapper.bias_offset)]
        y2 = _np(wrapper(second, training=True))
        for before, after in zip(offsets, [_np(wrapper.g_offset), _np(wrapper.bias_offset)]):
            np.testing.assert_array_equal(before, after)
        t2 = second.astype(np.float64) @ reference_direction(v)
        np.testing.assert_allclose(y2, np.maximum((t2 - t.mean(0)) / t.std(0), 0.0), atol=1e-4)

    def test_data_init_without_bias_sets_unit_variance(self):
        x = (np.random.default_rng(7).normal(size=(16, 3)) * 4).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(2, use_bias=False))
        y = _np(wrapper(x, training=True))
        np.testing.assert_allclose(y.std(0), 1.0, atol=1e-4)

    def test_data_init_in_fit_happens_once_and_survives_reload(self, tmp_path):
        rng = np.random.default_rng(8)
        x = (rng.normal(size=(16, 4)) * 2 + 1).astype("float32")
        model = _dense_model()
        wrapper = model.layers[1]
        v0 = _np(wrapper.layer.kernel)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        model.fit(x, np.zeros((16, 1)), batch_size=8, epochs=1, shuffle=False, verbose=0)
        t = x[:8].astype(np.float64) @ reference_direction(v0)
        # Offsets are set once, from the first batch (shuffle=False), relative
        # to the initial g = ||v|| and bias 0; training then moves g and b.
        np.testing.assert_allclose(
            _np(wrapper.g_offset), 1.0 / t.std(0) - np.linalg.norm(v0, axis=0), atol=1e-4
        )
        np.testing.assert_allclose(_np(wrapper.bias_offset), -t.mean(0) / t.std(0), atol=1e-4)
        offsets = _np(wrapper.g_offset), _np(wrapper.bias_offset)
        path = os.path.join(str(tmp_path), "wn.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        reloaded = loaded.layers[1]
        assert bool(_np(reloaded.initialized))
        loaded.fit(x * 10.0, np.zeros((16, 1)), batch_size=16, epochs=1, verbose=0)
        np.testing.assert_array_equal(_np(reloaded.g_offset), offsets[0])
        np.testing.assert_array_equal(_np(reloaded.bias_offset), offsets[1])

    def test_jit_compiled_fit(self):
        rng = np.random.default_rng(9)
        x = (rng.normal(size=(16, 4)) * 2 + 1).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        model = _dense_model()
        v0 = _np(model.layers[1].layer.kernel)
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        wrapper = model.layers[1]
        assert bool(_np(wrapper.initialized))
        t = x[:8].astype(np.float64) @ reference_direction(v0)
        np.testing.assert_allclose(_np(wrapper.bias_offset), -t.mean(0) / t.std(0), atol=1e-4)

    def test_mixed_precision_norms_in_float32(self):
        rng = np.random.default_rng(10)
        x = rng.normal(size=(4, 5)).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(3), data_init=False, dtype="mixed_float16")
        wrapper.build(x.shape)
        # Squares of 1e3 overflow float16: the norm must be taken in float32.
        v = (rng.normal(size=(5, 3)) * 1e3).astype("float32")
        wrapper.layer.kernel.assign(v)
        wrapper.g.assign(np.array([1.0, 2.0, 3.0], "float32"))
        y = wrapper(x)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert all(
            keras.backend.standardize_dtype(w.dtype) in ("float32", "bool") for w in wrapper.weights
        )
        expected = reference_dense(x, v, np.array([1.0, 2.0, 3.0]), 0.0)
        np.testing.assert_allclose(
            _np(keras.ops.cast(y, "float32")), expected, atol=2e-2, rtol=1e-2
        )

    def test_mixed_precision_fit(self):
        keras.config.set_dtype_policy("mixed_float16")
        x = np.random.default_rng(11).normal(size=(8, 4)).astype("float32")
        model = _dense_model()
        model.compile(optimizer="adam", loss="mse")
        history = model.fit(x, np.zeros((8, 1)), epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert bool(_np(model.layers[1].initialized))

    def test_config_round_trip_and_keras_file(self, tmp_path):
        wrapper = WeightNormalization(
            keras.layers.Conv1D(3, 2, activation="relu"), data_init=False, name="wn"
        )
        restored = assert_config_round_trip(wrapper)
        assert isinstance(restored.layer, keras.layers.Conv1D)
        assert restored.layer.get_config()["activation"] == "relu"
        assert restored.data_init is False
        inputs = keras.Input((6, 2))
        outputs = WeightNormalization(keras.layers.Conv1D(3, 2))(inputs)
        model = keras.Model(inputs, keras.layers.Flatten()(outputs))
        x = np.random.default_rng(12).normal(size=(2, 6, 2)).astype("float32")
        model.layers[1](x, training=True)  # data init, so the offsets are non-trivial
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        assert [w.name for w in loaded.weights] == [w.name for w in model.weights]

    def test_weights(self):
        wrapper = WeightNormalization(keras.layers.Dense(3))
        wrapper.build((None, 4))
        assert tuple(wrapper.g.shape) == (3,)
        assert len(wrapper.trainable_weights) == 3  # g, kernel, bias
        assert len(wrapper.non_trainable_weights) == 3  # g_offset, bias_offset, initialized
        plain = WeightNormalization(
            keras.layers.Conv2DTranspose(5, 2, use_bias=False), data_init=False
        )
        plain.build((None, 4, 4, 2))
        assert tuple(plain.g.shape) == (5,)
        assert len(plain.trainable_weights) == 2 and not plain.non_trainable_weights

    def test_mask_passed_on_like_the_wrapped_layer(self):
        wrapper = WeightNormalization(keras.layers.Dense(4))
        assert wrapper.supports_masking
        assert not WeightNormalization(keras.layers.Conv1D(2, 2)).supports_masking
        mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
        np.testing.assert_array_equal(
            _np(wrapper.compute_mask(None, keras.ops.convert_to_tensor(mask))), mask
        )
        inputs = keras.Input((None, 3))
        hidden = WeightNormalization(keras.layers.Dense(4))(keras.layers.Masking(0.0)(inputs))
        model = keras.Model(inputs, keras.layers.LSTM(2, return_sequences=True)(hidden))
        real = np.random.default_rng(13).normal(size=(1, 3, 3)).astype("float32")
        outputs = [_np(model(np.pad(real, ((0, 0), (0, pad), (0, 0)))))[0, :3] for pad in (0, 2, 6)]
        for other in outputs[1:]:
            np.testing.assert_allclose(other, outputs[0], atol=1e-6)

    @pytest.mark.parametrize(
        "layer, error, pattern",
        [
            (keras.layers.Dropout(0.5), TypeError, "Dropout"),
            (keras.layers.LSTM(2), TypeError, "LSTM"),
            ("dense", TypeError, "layer"),
            (None, TypeError, "layer"),
        ],
    )
    @pytest.mark.backend_free
    def test_layer_without_kernel_is_rejected(self, layer, error, pattern):
        with pytest.raises(error, match=pattern):
            WeightNormalization(layer)

    @pytest.mark.backend_free
    def test_data_init_must_be_bool(self):
        with pytest.raises(TypeError, match="Argument `data_init` must be a bool"):
            WeightNormalization(keras.layers.Dense(2), data_init=1)

    @pytest.mark.tensorflow_only
    def test_export_serves(self, tmp_path):
        inputs = keras.Input((6, 6, 2))
        hidden = WeightNormalization(keras.layers.Conv2D(3, 3, activation="relu"))(inputs)
        outputs = WeightNormalization(keras.layers.Dense(2))(keras.layers.Flatten()(hidden))
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(14).normal(size=(3, 6, 6, 2)).astype("float32")
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, np.zeros((3, 2)), epochs=1, verbose=0)
        assert_export_serves(model, x, tmp_path)
