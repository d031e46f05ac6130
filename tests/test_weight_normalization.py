"""Tests for keras_gradkit.layers.WeightNormalization."""

import itertools
import os

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit.layers import IndRNN, LayerNormLSTMCell, WeightNormalization
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


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


def _outputs(y):
    """A layer's output(s) as a list of NumPy arrays."""
    return [_np(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def _random_weights(layer, rng):
    """Sets non-symmetric random values on every weight of `layer`; returns them."""
    values = [(rng.normal(size=w.shape) * 0.5 + 0.2).astype("float32") for w in layer.weights]
    layer.set_weights(values)
    return values


# Recurrent layers the wrapper takes, each with a different option in use.
_RNN_LAYERS = {
    "SimpleRNN": lambda: keras.layers.SimpleRNN(4, return_sequences=True),
    "LSTM": lambda: keras.layers.LSTM(3, return_sequences=True, go_backwards=True),
    "GRU": lambda: keras.layers.GRU(3, return_state=True),
    "IndRNN": lambda: IndRNN(4, return_sequences=True),
    "gradkit_LSTM": lambda: keras_gradkit.layers.LSTM(3, forget_bias=2.0),
    "gradkit_GRU": lambda: keras_gradkit.layers.GRU(3, return_sequences=True),
    "RNN_LayerNormLSTMCell": lambda: keras.layers.RNN(LayerNormLSTMCell(3)),
}


class _CellWithoutKernel(keras.layers.Layer):
    """A cell whose input weights are not called `kernel`."""

    state_size = 2

    def build(self, input_shape):
        self.weights_in = self.add_weight(shape=(input_shape[-1], 2), name="weights_in")

    def call(self, inputs, states):
        h = keras.ops.matmul(inputs, self.weights_in) + states[0]
        return h, [h]


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

    def test_jit_compiled_fit(self, monkeypatch):
        if keras.backend.backend() == "torch":
            # Keras compiles the step with `torch.compile`: TorchDynamo captures
            # it (where a data-dependent branch would break or fail) and AOT
            # autograd traces its backward pass; the "aot_eager" backend then
            # runs the captured graphs instead of generating code with
            # Inductor (Inductor's code is torch's to test; its compile
            # doubles this test's time: benchmarks/README.md, "Test time").
            import torch

            compile_ = torch.compile
            monkeypatch.setattr(
                torch, "compile", lambda f, **kw: compile_(f, **{"backend": "aot_eager", **kw})
            )
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
            (keras.layers.Bidirectional(keras.layers.LSTM(2)), TypeError, "Bidirectional"),
            (
                keras.layers.RNN([keras.layers.SimpleRNNCell(2), keras.layers.SimpleRNNCell(2)]),
                TypeError,
                "StackedRNNCells",
            ),
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

    # ---- Recurrent layers, rnn_kernel="input": the cell's input kernel is normalized.

    @pytest.mark.parametrize("name", sorted(_RNN_LAYERS))
    def test_rnn_equals_layer_with_normalized_input_kernel(self, name):
        """The wrapper computes what the plain layer computes with the input
        kernel g * v / ||v|| (one norm per column) and the recurrent kernel
        and biases as they are, under a mask (its first sample has none masked)."""
        rng = np.random.default_rng(20)
        x = rng.normal(size=(3, 5, 4)).astype("float32")
        mask = np.arange(5) < np.array([[5], [3], [2]])
        wrapper = WeightNormalization(_RNN_LAYERS[name](), data_init=False, rnn_kernel="input")
        wrapper.build(x.shape)
        assert wrapper.layer.weights[0] is wrapper.layer.cell.kernel
        weights = _random_weights(wrapper.layer, rng)
        v = weights[0]
        g = rng.uniform(0.5, 2.0, size=wrapper.g.shape).astype("float32")
        assert g.shape == (v.shape[1],)
        wrapper.g.assign(g)
        plain = _RNN_LAYERS[name]()
        plain.build(x.shape)
        plain.set_weights([(reference_direction(v) * g).astype("float32"), *weights[1:]])
        got = _outputs(wrapper(x, mask=mask))
        expected = _outputs(plain(x, mask=mask))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        # The normalization matters here, and the cell's variable is back in place.
        assert np.all(np.abs(np.linalg.norm(v, axis=0) - g) > 1e-2)
        assert wrapper.layer.cell.kernel is wrapper.layer.weights[0]
        np.testing.assert_array_equal(_np(wrapper.layer.cell.kernel), v)

    def test_simple_rnn_matches_numpy_recurrence(self):
        """h_t = tanh(x_t . (g v / ||v||) + h_{t-1} . U + b) from a given initial state."""
        rng = np.random.default_rng(21)
        x = rng.normal(size=(2, 4, 3)).astype("float32")
        h0 = rng.normal(size=(2, 5)).astype("float32")
        wrapper = WeightNormalization(
            keras.layers.SimpleRNN(5, return_sequences=True), rnn_kernel="input"
        )
        wrapper.build(x.shape)
        v, u, b = _random_weights(wrapper.layer, rng)
        g = rng.uniform(0.5, 2.0, size=(5,)).astype("float32")
        wrapper.g.assign(g)
        w = reference_direction(v) * g
        h, expected = h0.astype(np.float64), []
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ w + h @ u + b)
            expected.append(h)
        got = _np(wrapper(x, initial_state=[h0]))
        np.testing.assert_allclose(got, np.stack(expected, axis=1), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("name", ["LSTM", "IndRNN"])
    def test_rnn_gradients_follow_the_paper(self, name):
        """dL/dg = dL/dw . v / ||v|| and dL/dv = g / ||v|| (dL/dw - (dL/dg) v / ||v||) per
        column, with dL/dw the plain layer's kernel gradient; the recurrent kernel
        gets its own gradient. `training=True` runs IndRNN's training engine."""
        rng = np.random.default_rng(22)
        x = rng.normal(size=(2, 5, 3)).astype("float32")
        make = _RNN_LAYERS[name]
        wrapper = WeightNormalization(make(), data_init=False, rnn_kernel="input")
        wrapper.build(x.shape)
        weights = _random_weights(wrapper.layer, rng)
        v = weights[0]
        g = rng.uniform(0.5, 2.0, size=wrapper.g.shape).astype("float32")
        wrapper.g.assign(g)
        plain = make()
        plain.build(x.shape)
        direction = reference_direction(v)
        plain.set_weights([(direction * g).astype("float32"), *weights[1:]])
        out_shape = tuple(_np(plain(x)).shape)
        target = rng.normal(size=out_shape).astype("float32")
        cell = wrapper.layer.cell

        def loss_of(layer):
            return lambda x: keras.ops.sum(keras.ops.multiply(layer(x, training=True), target))

        _, _, (grad_v, grad_g, grad_u) = value_and_gradients(
            loss_of(wrapper), [x], [cell.kernel, wrapper.g, cell.recurrent_kernel]
        )
        _, _, (grad_w, grad_u_plain) = value_and_gradients(
            loss_of(plain), [x], [plain.cell.kernel, plain.cell.recurrent_kernel]
        )
        expected_g = np.sum(grad_w * direction, axis=0)
        expected_v = g / np.linalg.norm(v, axis=0) * (grad_w - expected_g * direction)
        np.testing.assert_allclose(grad_g, expected_g, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(grad_v, expected_v, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(np.sum(grad_v * v, axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(grad_u, grad_u_plain, atol=1e-5, rtol=1e-4)
        assert np.all(np.abs(grad_g) > 0)

    def test_rnn_data_init_sets_g_from_unmasked_steps_and_keeps_biases(self):
        rng = np.random.default_rng(23)
        x = (rng.normal(size=(4, 6, 3)) * 2 + 1).astype("float32")
        mask = np.arange(6) < np.array([[6], [5], [3], [2]])
        x[~mask] = 50.0  # padding: it would dominate the statistics if counted
        wrapper = WeightNormalization(
            keras.layers.LSTM(3, return_sequences=True), rnn_kernel="input"
        )
        wrapper.build(x.shape)
        cell = wrapper.layer.cell
        v0, u0, b0 = (_np(w) for w in wrapper.layer.weights)
        np.testing.assert_array_equal(b0, np.repeat([0.0, 1.0, 0.0, 0.0], 3))  # Keras's init
        assert len(wrapper.trainable_weights) == 4  # g, kernel, recurrent_kernel, bias
        assert len(wrapper.non_trainable_weights) == 2  # g_offset, initialized
        assert not hasattr(wrapper, "bias_offset")
        wrapper(x, mask=mask, training=True)
        assert bool(_np(wrapper.initialized))
        t = x[mask].astype(np.float64) @ reference_direction(v0)  # real steps, (n, 12)
        g_eff = _np(wrapper.g) + _np(wrapper.g_offset)
        np.testing.assert_allclose(g_eff, 1.0 / t.std(0), rtol=1e-4)
        np.testing.assert_array_equal(_np(cell.bias), b0)
        np.testing.assert_allclose(
            _np(wrapper.g), np.linalg.norm(v0, axis=0).astype("float32"), rtol=1e-6
        )
        w = reference_direction(v0) * g_eff
        np.testing.assert_allclose((x[mask] @ w).std(0), 1.0, rtol=1e-3)
        plain = keras.layers.LSTM(3, return_sequences=True)
        plain.build(x.shape)
        plain.set_weights([w.astype("float32"), u0, b0])
        np.testing.assert_allclose(
            _np(wrapper(x, mask=mask)), _np(plain(x, mask=mask)), atol=1e-5, rtol=1e-5
        )
        offset = _np(wrapper.g_offset)
        wrapper(x[::-1] * 3.0, training=True)  # later batches do not initialize again
        np.testing.assert_array_equal(_np(wrapper.g_offset), offset)

    def test_rnn_stateful_carries_the_state(self):
        rng = np.random.default_rng(24)
        x = rng.normal(size=(2, 6, 3)).astype("float32")
        wrapper = WeightNormalization(
            keras.layers.GRU(4, return_sequences=True, stateful=True),
            data_init=False,
            rnn_kernel="input",
        )
        wrapper.build((2, None, 3))
        weights = _random_weights(wrapper.layer, rng)
        plain = keras.layers.GRU(4, return_sequences=True)
        plain.build(x.shape)
        plain.set_weights([(reference_direction(weights[0]) * _np(wrapper.g)), *weights[1:]])
        halves = [_np(wrapper(x[:, :4])), _np(wrapper(x[:, 4:]))]
        np.testing.assert_allclose(
            np.concatenate(halves, axis=1), _np(plain(x)), atol=1e-5, rtol=1e-5
        )

    def test_rnn_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        rng = np.random.default_rng(25)
        x = rng.normal(size=(2, 4, 3)).astype("float32")
        wrapper = WeightNormalization(keras.layers.GRU(3), data_init=False, rnn_kernel="input")
        wrapper.build(x.shape)
        weights = _random_weights(wrapper.layer, rng)
        # Entries of 1e3: their squares overflow float16, the norm must be float32.
        wrapper.layer.cell.kernel.assign(weights[0] * 1e3)
        y = wrapper(x)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert all(
            keras.backend.standardize_dtype(w.dtype) in ("float32", "bool") for w in wrapper.weights
        )
        keras.config.set_dtype_policy("float32")
        plain = keras.layers.GRU(3)
        plain.build(x.shape)
        plain.set_weights([reference_direction(weights[0]) * _np(wrapper.g), *weights[1:]])
        np.testing.assert_allclose(_np(keras.ops.cast(y, "float32")), _np(plain(x)), atol=1e-2)

    # ---- Recurrent layers, rnn_kernel="recurrent" (the default) or "both".

    @pytest.mark.parametrize("rnn_kernel", ["recurrent", "both"])
    @pytest.mark.parametrize("name", sorted(set(_RNN_LAYERS) - {"IndRNN"}))
    def test_rnn_equals_layer_with_normalized_recurrent_kernel(self, name, rnn_kernel):
        """The wrapper computes what the plain layer computes with the recurrent
        kernel r * u / ||u|| (one norm per column), and with "both" the input
        kernel g * v / ||v|| too, under a mask."""
        rng = np.random.default_rng(30)
        x = rng.normal(size=(3, 5, 4)).astype("float32")
        mask = np.arange(5) < np.array([[5], [3], [2]])
        wrapper = WeightNormalization(_RNN_LAYERS[name](), data_init=False, rnn_kernel=rnn_kernel)
        wrapper.build(x.shape)
        cell = wrapper.layer.cell
        assert wrapper.layer.weights[1] is cell.recurrent_kernel
        weights = _random_weights(wrapper.layer, rng)
        v, u = weights[0], weights[1]
        # Lengths well away from ||u||, so that the normalization matters.
        scale = rng.uniform(1.5, 2.5, size=wrapper.recurrent_g.shape)
        r = (np.linalg.norm(u, axis=0) * scale).astype("float32")
        assert r.shape == (u.shape[1],)
        wrapper.recurrent_g.assign(r)
        expected_weights = [v, (reference_direction(u) * r).astype("float32"), *weights[2:]]
        if rnn_kernel == "both":
            g = rng.uniform(0.5, 2.0, size=wrapper.g.shape).astype("float32")
            wrapper.g.assign(g)
            expected_weights[0] = (reference_direction(v) * g).astype("float32")
        else:
            assert not hasattr(wrapper, "g")
        plain = _RNN_LAYERS[name]()
        plain.build(x.shape)
        plain.set_weights(expected_weights)
        got = _outputs(wrapper(x, mask=mask))
        expected = _outputs(plain(x, mask=mask))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        assert cell.kernel is wrapper.layer.weights[0]
        assert cell.recurrent_kernel is wrapper.layer.weights[1]
        np.testing.assert_array_equal(_np(cell.recurrent_kernel), u)

    @pytest.mark.parametrize("rnn_kernel", ["recurrent", "both"])
    def test_simple_rnn_recurrent_kernel_matches_numpy_recurrence(self, rnn_kernel):
        """h_t = tanh(x_t . W + h_{t-1} . (r u / ||u||) + b), W = V or g V / ||V||."""
        rng = np.random.default_rng(31)
        x = rng.normal(size=(2, 4, 3)).astype("float32")
        h0 = rng.normal(size=(2, 5)).astype("float32")
        wrapper = WeightNormalization(
            keras.layers.SimpleRNN(5, return_sequences=True), rnn_kernel=rnn_kernel
        )
        wrapper.build(x.shape)
        v, u, b = _random_weights(wrapper.layer, rng)
        r = rng.uniform(0.5, 2.0, size=(5,)).astype("float32")
        wrapper.recurrent_g.assign(r)
        w, recurrent = v.astype(np.float64), reference_direction(u) * r
        if rnn_kernel == "both":
            g = rng.uniform(0.5, 2.0, size=(5,)).astype("float32")
            wrapper.g.assign(g)
            w = reference_direction(v) * (g + _np(wrapper.g_offset))  # offset 0: no init yet
        h, expected = h0.astype(np.float64), []
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ w + h @ recurrent + b)
            expected.append(h)
        got = _np(wrapper(x, initial_state=[h0]))
        np.testing.assert_allclose(got, np.stack(expected, axis=1), atol=1e-5, rtol=1e-5)

    def test_lstm_recurrent_kernel_matches_numpy_recurrence(self):
        """Keras's LSTM gates (i, f, c, o) with U = r * u / ||u|| per column of
        the (units, 4 * units) recurrent kernel."""
        rng = np.random.default_rng(32)
        x = rng.normal(size=(2, 5, 3)).astype("float32")
        units = 4
        wrapper = WeightNormalization(keras.layers.LSTM(units, return_sequences=True))
        wrapper.build(x.shape)
        v, u, b = _random_weights(wrapper.layer, rng)
        r = rng.uniform(0.5, 2.0, size=(4 * units,)).astype("float32")
        wrapper.recurrent_g.assign(r)
        recurrent = reference_direction(u) * r

        def sigmoid(z):
            return 1.0 / (1.0 + np.exp(-z))

        h = c = np.zeros((2, units))
        expected = []
        for t in range(x.shape[1]):
            z = x[:, t] @ v + h @ recurrent + b
            i, f, c_hat, o = np.split(z, 4, axis=-1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(c_hat)
            h = sigmoid(o) * np.tanh(c)
            expected.append(h)
        np.testing.assert_allclose(
            _np(wrapper(x)), np.stack(expected, axis=1), atol=1e-5, rtol=1e-5
        )

    @pytest.mark.parametrize(
        "name, rnn_kernel",
        [("LSTM", "recurrent"), ("SimpleRNN", "both"), ("gradkit_GRU", "recurrent")],
    )
    def test_rnn_recurrent_kernel_gradients_follow_the_paper(self, name, rnn_kernel):
        """dL/dr = dL/dU . u / ||u|| and dL/du = r / ||u|| (dL/dU - (dL/dr) u / ||u||)
        per column, with dL/dU the plain layer's recurrent kernel gradient; the
        input kernel's gradients follow the same rule with "both" and are the
        plain layer's with "recurrent"."""
        rng = np.random.default_rng(33)
        x = rng.normal(size=(2, 5, 3)).astype("float32")
        make = _RNN_LAYERS[name]
        wrapper = WeightNormalization(make(), data_init=False, rnn_kernel=rnn_kernel)
        wrapper.build(x.shape)
        weights = _random_weights(wrapper.layer, rng)
        v, u = weights[0], weights[1]
        lengths = {"recurrent_kernel": (u, wrapper.recurrent_g)}
        if rnn_kernel == "both":
            lengths["kernel"] = (v, wrapper.g)
        plain_weights = list(weights)
        for name_, (kernel, length) in lengths.items():
            g = rng.uniform(0.5, 2.0, size=length.shape).astype("float32")
            length.assign(g)
            index = 0 if name_ == "kernel" else 1
            plain_weights[index] = (reference_direction(kernel) * g).astype("float32")
        plain = make()
        plain.build(x.shape)
        plain.set_weights(plain_weights)
        target = rng.normal(size=_np(plain(x)).shape).astype("float32")
        cell = wrapper.layer.cell

        def loss_of(layer):
            return lambda x: keras.ops.sum(keras.ops.multiply(layer(x, training=True), target))

        _, _, (grad_v, grad_u, *grad_lengths) = value_and_gradients(
            loss_of(wrapper),
            [x],
            [cell.kernel, cell.recurrent_kernel, *(g for _, g in lengths.values())],
        )
        _, _, (grad_w, grad_w_recurrent) = value_and_gradients(
            loss_of(plain), [x], [plain.cell.kernel, plain.cell.recurrent_kernel]
        )
        grads = {"recurrent_kernel": (grad_u, grad_w_recurrent), "kernel": (grad_v, grad_w)}
        for (name_, (kernel, length)), grad_g in zip(lengths.items(), grad_lengths):
            grad_kernel, grad_plain = grads[name_]
            direction = reference_direction(kernel)
            expected_g = np.sum(grad_plain * direction, axis=0)
            expected_kernel = (
                _np(length) / np.linalg.norm(kernel, axis=0) * (grad_plain - expected_g * direction)
            )
            np.testing.assert_allclose(grad_g, expected_g, atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(grad_kernel, expected_kernel, atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(np.sum(grad_kernel * kernel, axis=0), 0.0, atol=1e-5)
            assert np.all(np.abs(grad_g) > 0)
        if rnn_kernel == "recurrent":
            np.testing.assert_allclose(grad_v, grad_w, atol=1e-5, rtol=1e-4)

    def test_rnn_data_init_leaves_the_recurrent_kernel_as_initialized(self):
        """The recurrent lengths start at ||u|| and data init never sets them: with
        "recurrent" there is nothing to initialize, with "both" only `g` is set."""
        rng = np.random.default_rng(34)
        x = (rng.normal(size=(4, 6, 3)) * 2 + 1).astype("float32")
        recurrent = WeightNormalization(keras.layers.LSTM(3, return_sequences=True))
        assert recurrent.rnn_kernel == "auto" and recurrent.data_init  # the recurrent kernel
        recurrent.build(x.shape)
        assert len(recurrent.trainable_weights) == 4  # recurrent_g, kernel, recurrent_kernel, bias
        assert not recurrent.non_trainable_weights
        assert not hasattr(recurrent, "g") and not hasattr(recurrent, "initialized")
        u0 = _np(recurrent.layer.cell.recurrent_kernel)
        y = _np(recurrent(x, training=True))
        np.testing.assert_allclose(
            _np(recurrent.recurrent_g), np.linalg.norm(u0, axis=0), rtol=1e-6
        )
        np.testing.assert_allclose(y, _np(recurrent.layer(x)), atol=1e-5, rtol=1e-5)

        both = WeightNormalization(keras.layers.LSTM(3, return_sequences=True), rnn_kernel="both")
        both.build(x.shape)
        assert len(both.trainable_weights) == 5  # g, recurrent_g, the layer's three
        assert len(both.non_trainable_weights) == 2  # g_offset, initialized
        v0, u0, _ = (_np(w) for w in both.layer.weights)
        both(x, training=True)
        assert bool(_np(both.initialized))
        t = x.reshape(-1, 3).astype(np.float64) @ reference_direction(v0)
        np.testing.assert_allclose(_np(both.g) + _np(both.g_offset), 1.0 / t.std(0), rtol=1e-4)
        np.testing.assert_allclose(_np(both.recurrent_g), np.linalg.norm(u0, axis=0), rtol=1e-6)

    @pytest.mark.backend_free
    def test_rnn_kernel_must_be_one_of_the_choices(self):
        with pytest.raises(
            ValueError,
            match="Argument `rnn_kernel` must be one of 'auto', 'recurrent', 'input', 'both'. "
            "Received: rnn_kernel='hidden'",
        ):
            WeightNormalization(keras.layers.Dense(2), rnn_kernel="hidden")

    @pytest.mark.parametrize("rnn_kernel", ["recurrent", "both"])
    def test_ind_rnn_takes_the_input_kernel_only(self, rnn_kernel):
        wrapper = WeightNormalization(IndRNN(3, name="ind"), rnn_kernel=rnn_kernel)
        with pytest.raises(
            ValueError, match=r"Argument `rnn_kernel` must be 'input'.*'ind'.*shape \(3,\)"
        ):
            wrapper.build((2, 4, 5))

    @pytest.mark.parametrize(
        "make,expected",
        [
            (lambda: keras.layers.LSTM(3), ("recurrent_kernel",)),
            (lambda: keras.layers.SimpleRNN(3), ("recurrent_kernel",)),
            (lambda: IndRNN(3), ("kernel",)),
        ],
        ids=["LSTM", "SimpleRNN", "IndRNN"],
    )
    def test_auto_is_the_recurrent_kernel_unless_it_is_a_vector(self, make, expected):
        wrapper = WeightNormalization(make())
        assert wrapper.rnn_kernel == "auto"
        wrapper.build((2, 4, 5))
        assert wrapper._kernel_names() == expected
        assert wrapper.get_config()["rnn_kernel"] == "auto"
        x = np.random.default_rng(30).normal(size=(2, 4, 5)).astype("float32")
        np.testing.assert_allclose(  # before training, the wrapped layer's own output
            keras.ops.convert_to_numpy(wrapper(x)),
            keras.ops.convert_to_numpy(wrapper.layer(x)),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_config_without_rnn_kernel_is_the_input_kernel(self):
        """A config saved before `rnn_kernel` existed loads as the input-kernel
        normalization it was; the argument itself round-trips."""
        for rnn_kernel in ("auto", "recurrent", "input", "both"):
            config = WeightNormalization(keras.layers.GRU(2), rnn_kernel=rnn_kernel).get_config()
            assert config["rnn_kernel"] == rnn_kernel
            assert WeightNormalization.from_config(config).rnn_kernel == rnn_kernel
        del config["rnn_kernel"]
        assert WeightNormalization.from_config(config).rnn_kernel == "input"
        assert WeightNormalization(keras.layers.GRU(2)).rnn_kernel == "auto"

    def test_keras_file_saved_before_rnn_kernel_loads_as_saved(self, tmp_path):
        """`tests/data/weight_normalization_input_kernel.keras` was saved by
        keras_gradkit before `rnn_kernel` existed (input-kernel normalization),
        on TensorFlow: `keras.utils.set_random_seed(7)`, then
        WeightNormalization around `LSTM(4, return_sequences=True)`,
        `SimpleRNN(3)` and `Dense(2, activation="tanh")` on inputs `(5, 3)`,
        called once with `training=True` on the `.npz`'s `x` (data init, so
        the offsets are non-zero). The `.npz` holds `x`, every weight
        (`weight_<i>` in `model.weights` order) and the outputs `y` then."""
        model = keras.saving.load_model(
            os.path.join(DATA, "weight_normalization_input_kernel.keras")
        )
        saved = np.load(os.path.join(DATA, "weight_normalization_input_kernel.npz"))
        wrappers = model.layers[1:]
        assert [w.rnn_kernel for w in wrappers] == ["input"] * 3
        assert not any(hasattr(w, "recurrent_g") for w in wrappers)
        assert len(model.weights) == len(saved.files) - 2
        for i, weight in enumerate(model.weights):
            np.testing.assert_array_equal(_np(weight), saved[f"weight_{i}"])
        np.testing.assert_allclose(_np(model(saved["x"])), saved["y"], atol=1e-5, rtol=1e-5)
        for wrapper in wrappers[:2]:  # each RNN's remove() keeps its input-kernel meaning
            features = wrapper.layer.cell.kernel.shape[0]
            x = np.random.default_rng(35).normal(size=(2, 5, features)).astype("float32")
            np.testing.assert_allclose(
                _np(wrapper.remove()(x)), _np(wrapper(x)), atol=1e-5, rtol=1e-5
            )
        path = tmp_path / "again.keras"
        model.save(path)
        again = keras.saving.load_model(path)
        assert [w.rnn_kernel for w in again.layers[1:]] == ["input"] * 3
        np.testing.assert_allclose(_np(again(saved["x"])), saved["y"], atol=1e-5, rtol=1e-5)

    # ---- remove(): a plain layer with the effective kernel and bias.

    @pytest.mark.parametrize(
        "make_layer, shape, rnn_kernel",
        [
            (lambda: keras.layers.Dense(3, activation="tanh"), (4,), "recurrent"),
            (lambda: keras.layers.Conv2DTranspose(3, 2, strides=2), (3, 3, 2), "recurrent"),
            (lambda: keras.layers.LSTM(3, return_sequences=True), (5, 4), "input"),
            (lambda: IndRNN(4), (5, 3), "input"),
            (lambda: keras.layers.LSTM(3, return_sequences=True), (5, 4), "recurrent"),
            (lambda: keras.layers.GRU(3, go_backwards=True), (5, 4), "both"),
        ],
        ids=["Dense", "Conv2DTranspose", "LSTM", "IndRNN", "LSTM-recurrent", "GRU-both"],
    )
    def test_remove_matches_the_wrapper_through_training_and_reload(
        self, make_layer, shape, rnn_kernel, tmp_path
    ):
        rng = np.random.default_rng(26)
        x = (rng.normal(size=(4, *shape)) + 0.5).astype("float32")
        inputs = keras.Input(shape)
        wrapper = WeightNormalization(make_layer(), rnn_kernel=rnn_kernel)
        model = keras.Model(inputs, wrapper(inputs))
        y = rng.normal(size=_np(model(x)).shape).astype("float32")
        self._check_remove(wrapper, x)  # untrained: the plain layer's own kernel
        wrapper(x, training=True)  # data-dependent initialization (of an input kernel)
        if hasattr(wrapper, "g"):
            assert bool(_np(wrapper.initialized)) and np.any(_np(wrapper.g_offset) != 0)
        self._check_remove(wrapper, x)
        lengths = [getattr(wrapper, n) for n in ("g", "recurrent_g") if hasattr(wrapper, n)]
        before = [_np(g) for g in lengths]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.train_on_batch(x, y)
        for g, b in zip(lengths, before):
            assert not np.allclose(_np(g), b)
        self._check_remove(wrapper, x)
        loaded = assert_keras_file_round_trip(model, x, tmp_path)
        self._check_remove(loaded.layers[1], x)

    @staticmethod
    def _check_remove(wrapper, x):
        """`remove()` gives a new layer of the same class and config, with the kernel
        g_eff * v / ||v|| (each normalized kernel of an RNN's cell) and bias
        b + bias_offset computed here in NumPy, that computes what the wrapper
        computes; the wrapper is unchanged."""
        before = [_np(w) for w in wrapper.weights]
        plain = wrapper.remove()
        layer = wrapper.layer
        assert type(plain) is type(layer) and plain.built
        assert plain.get_config() == layer.get_config()
        assert {id(w) for w in plain.weights}.isdisjoint(id(w) for w in wrapper.weights)
        for b, w in zip(before, wrapper.weights):
            np.testing.assert_array_equal(_np(w), b)
        is_rnn = isinstance(layer, keras.layers.RNN)
        source, target = (layer.cell, plain.cell) if is_rnn else (layer, plain)
        unit_axis = -2 if isinstance(layer, keras.layers.Conv2DTranspose) else -1
        normalized = (
            {"kernel": "g", "recurrent_kernel": "recurrent_g"} if is_rnn else {"kernel": "g"}
        )
        for name, length in normalized.items():
            v = _np(getattr(source, name))
            if not hasattr(wrapper, length):  # not normalized: copied as it is
                np.testing.assert_array_equal(_np(getattr(target, name)), v)
                continue
            g_eff = _np(getattr(wrapper, length))
            if name == "kernel" and wrapper.data_init:
                g_eff = g_eff + _np(wrapper.g_offset)
            g_shape = [1] * v.ndim
            g_shape[unit_axis] = -1
            np.testing.assert_allclose(
                _np(getattr(target, name)),
                reference_direction(v, unit_axis) * g_eff.reshape(g_shape),
                atol=1e-6,
                rtol=1e-5,
            )
        expected_bias = _np(source.bias) + (0.0 if is_rnn else _np(wrapper.bias_offset))
        np.testing.assert_allclose(_np(target.bias), expected_bias, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(_np(plain(x)), _np(wrapper(x)), atol=1e-5, rtol=1e-5)

    def test_remove_without_data_init_or_bias(self):
        x = np.random.default_rng(27).normal(size=(3, 4)).astype("float32")
        wrapper = WeightNormalization(keras.layers.Dense(2, use_bias=False), data_init=False)
        wrapper.build(x.shape)
        wrapper.g.assign(np.array([0.5, 3.0], "float32"))
        plain = wrapper.remove()
        assert plain.bias is None
        expected = x @ (reference_direction(_np(wrapper.layer.kernel)) * [0.5, 3.0])
        np.testing.assert_allclose(_np(plain(x)), expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.backend_free
    def test_remove_before_build_is_an_error(self):
        wrapper = WeightNormalization(keras.layers.Dense(2, name="head"))
        with pytest.raises(ValueError, match="call the wrapper .* first.*'head'"):
            wrapper.remove()

    # ---- Bad recurrent layers.

    @pytest.mark.parametrize(
        "make_layer, shape, pattern",
        [
            (lambda: keras.layers.RNN(_CellWithoutKernel()), (2, 3, 4), "_CellWithoutKernel"),
            (lambda: keras.layers.ConvLSTM1D(2, 2), (2, 3, 5, 2), "ConvLSTMCell"),
        ],
        ids=["no_kernel", "conv_kernel"],
    )
    @pytest.mark.parametrize("rnn_kernel", ["recurrent", "input"])
    def test_rnn_cell_without_an_input_kernel_is_rejected(
        self, make_layer, shape, pattern, rnn_kernel
    ):
        wrapper = WeightNormalization(make_layer(), rnn_kernel=rnn_kernel)
        with pytest.raises(ValueError, match=f"Argument `layer`.*{pattern}"):
            wrapper.build(shape)

    def test_initial_state_only_for_rnn(self):
        wrapper = WeightNormalization(keras.layers.Dense(2), data_init=False)
        x = np.ones((2, 3), "float32")
        with pytest.raises(ValueError, match="Argument `initial_state`.*Dense"):
            wrapper(x, initial_state=[x])

    def test_rnn_config_round_trip(self):
        wrapper = WeightNormalization(
            IndRNN(3, timesteps=10), data_init=False, rnn_kernel="input", name="wn_ind"
        )
        restored = assert_config_round_trip(wrapper)
        assert isinstance(restored.layer, IndRNN) and restored.layer.cell.timesteps == 10
        assert restored.data_init is False and restored.rnn_kernel == "input"

    @pytest.mark.tensorflow_only
    def test_rnn_export_serves(self, tmp_path):
        inputs = keras.Input((5, 3))
        hidden = WeightNormalization(keras.layers.LSTM(4, return_sequences=True))(inputs)
        outputs = WeightNormalization(IndRNN(3), rnn_kernel="input")(hidden)
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(28).normal(size=(2, 5, 3)).astype("float32")
        model.compile(optimizer="sgd", loss="mse")
        model.train_on_batch(x, np.zeros((2, 3), "float32"))  # data init and one step
        assert_export_serves(model, x, tmp_path)
