"""Tests for keras_gradkit.layers.GroupNorm."""

import inspect

import keras
import numpy as np
import pytest

from keras_gradkit.layers import GroupNorm
from tests.gradient_testing import value_and_gradients
from tests.layer_testing import assert_config_round_trip, assert_export_serves, run_layer_test


def reference_group_norm(x, groups, axis, gamma, beta, epsilon, mask=None):
    """Wu et al. (2018), eq. (1)-(3), with the statistics over unmasked steps.

    `gamma` and `beta` are per-channel vectors (or scalars)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    channels = x.shape[-1]
    groups = channels if groups == -1 else groups
    grouped = x.reshape(x.shape[:-1] + (groups, channels // groups))
    weights = np.ones(grouped.shape)
    if mask is not None:
        weights = weights * np.asarray(mask, np.float64).reshape(
            mask.shape + (1,) * (grouped.ndim - 2)
        )
    axes = tuple(a for a in range(1, grouped.ndim) if a != grouped.ndim - 2)
    count = np.maximum(weights.sum(axis=axes, keepdims=True), 1.0)
    mean = (grouped * weights).sum(axis=axes, keepdims=True) / count
    variance = (((grouped - mean) ** 2) * weights).sum(axis=axes, keepdims=True) / count
    normalized = ((grouped - mean) / np.sqrt(variance + epsilon)).reshape(x.shape)
    return np.moveaxis(normalized * gamma + beta, -1, axis)


def _random_params(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return [w.numpy() for w in layer.weights]


class TestGroupNorm:
    @pytest.mark.parametrize(
        "shape, axis, groups",
        [
            ((3, 8), -1, 4),
            ((3, 8), 1, 2),
            ((3, 5, 6), -1, 3),
            ((3, 6, 5), 1, 2),
            ((2, 3, 4, 6), -1, 2),
            ((2, 6, 3, 4), 1, 3),
            ((2, 3, 2, 2, 4), -1, 2),
            ((2, 4, 2, 3, 2), 1, -1),
        ],
    )
    def test_matches_keras_group_normalization(self, shape, axis, groups):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=shape) * 3.0 + 1.0).astype("float32")
        ours = GroupNorm(groups=groups, axis=axis, epsilon=1e-3)
        theirs = keras.layers.GroupNormalization(groups=groups, axis=axis, epsilon=1e-3)
        ours.build(shape)
        theirs.build(shape)
        theirs.set_weights(_random_params(ours, rng))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours(x)),
            keras.ops.convert_to_numpy(theirs(x)),
            atol=1e-5,
            rtol=1e-5,
        )

    @pytest.mark.parametrize("groups", [-1, 1, 2, 6])
    @pytest.mark.parametrize("axis", [-1, 2])
    def test_matches_numpy_reference(self, groups, axis):
        rng = np.random.default_rng(1)
        x = (rng.normal(size=(2, 3, 4, 6)) * 2.0 - 1.0).astype("float32")
        if axis == 2:
            x = x.transpose(0, 1, 3, 2)  # channels (6) at axis 2
        layer = GroupNorm(groups=groups, axis=axis, epsilon=1e-4)
        layer.build(x.shape)
        gamma, beta = _random_params(layer, rng)
        expected = reference_group_norm(x, groups, axis, gamma, beta, 1e-4)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5, rtol=1e-4
        )

    @pytest.mark.parametrize("shape", [(3, 5, 6), (3, 5, 2, 6)])
    def test_masked_statistics_match_reference(self, shape):
        rng = np.random.default_rng(2)
        x = rng.normal(size=shape).astype("float32") + 2.0
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 1, 0]], bool)
        layer = GroupNorm(groups=3)
        layer.build(shape)
        gamma, beta = _random_params(layer, rng)
        got = keras.ops.convert_to_numpy(layer(x, mask=mask))
        expected = reference_group_norm(x, 3, -1, gamma, beta, 1e-3, mask=mask)
        np.testing.assert_allclose(got[mask], expected[mask], atol=1e-5, rtol=1e-4)
        assert np.all(np.isfinite(got))
        # Unmasked statistics differ: the mask is really used.
        unmasked = reference_group_norm(x, 3, -1, gamma, beta, 1e-3)
        assert np.abs(got[1, :2] - unmasked[1, :2]).max() > 1e-2

    def _padded_model(self, layer):
        inputs = keras.Input((None, 4))
        hidden = keras.layers.Masking(mask_value=0.0)(inputs)
        hidden = layer(hidden)
        pooled = keras.layers.GlobalAveragePooling1D()(hidden)
        return keras.Model(inputs, [hidden, pooled])

    def test_outputs_at_real_steps_ignore_padding(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(2, 5, 4)).astype("float32") + 1.0
        x[1, 3:] = 0.0
        more = np.concatenate([x, np.zeros((2, 6, 4), "float32")], axis=1)
        ours = self._padded_model(GroupNorm(groups=2))
        theirs = self._padded_model(keras.layers.GroupNormalization(groups=2))
        theirs.set_weights(ours.get_weights())
        out, pooled = (keras.ops.convert_to_numpy(t) for t in ours(x))
        out_more, pooled_more = (keras.ops.convert_to_numpy(t) for t in ours(more))
        np.testing.assert_allclose(out_more[0, :5], out[0], atol=1e-5)
        np.testing.assert_allclose(out_more[1, :3], out[1, :3], atol=1e-5)
        assert np.all(np.isfinite(out_more))
        # The mask passes through: pooling averages the real steps only.
        np.testing.assert_allclose(pooled[1], out[1, :3].mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(pooled_more, pooled, atol=1e-5)
        # Keras's layer is changed by the padding (the bug this layer fixes).
        keras_out = keras.ops.convert_to_numpy(theirs(x)[0])
        keras_more = keras.ops.convert_to_numpy(theirs(more)[0])
        assert np.abs(keras_more[1, :3] - keras_out[1, :3]).max() > 1e-2

    def test_compute_mask_passes_mask_through(self):
        mask = np.array([[True, False]])
        assert GroupNorm(groups=1).compute_mask(np.zeros((1, 2, 3)), mask) is mask

    def test_all_masked_sample_is_finite_with_finite_gradients(self):
        layer = GroupNorm(groups=2)
        x = np.random.default_rng(4).normal(size=(2, 3, 4)).astype("float32")
        mask = np.array([[True, True, False], [False, False, False]])
        y = keras.ops.convert_to_numpy(layer(x, mask=mask))
        weights = keras.ops.convert_to_tensor(mask[..., None].astype("float32"))

        def loss(x):
            return keras.ops.sum(keras.ops.multiply(layer(x, mask=mask), weights))

        _, (grad_x,), grad_w = value_and_gradients(loss, [x], layer.trainable_weights)
        assert np.all(np.isfinite(y))
        for g in [grad_x] + grad_w:
            assert np.all(np.isfinite(g))
        assert np.abs(grad_x[0, :2]).max() > 0

    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision_statistics_in_float32(self, policy):
        rng = np.random.default_rng(5)
        x = (rng.normal(size=(2, 4, 8)) * 1e4).astype("float32")
        mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
        layer = GroupNorm(groups=4, dtype=policy)
        y = layer(x, mask=mask)
        compute_dtype = policy.split("_")[1]
        assert keras.backend.standardize_dtype(y.dtype) == compute_dtype
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
        y = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
        assert np.all(np.isfinite(y))
        expected = reference_group_norm(x, 4, -1, 1.0, 0.0, 1e-3, mask=mask)
        np.testing.assert_allclose(y[mask], expected[mask], atol=5e-2, rtol=2e-2)

    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision_inputs_above_float16_max(self, policy):
        """The input reaches the float32 statistics without a float16 copy
        (keras issue #22586): 70000 > 65504 would be inf in float16."""
        y = GroupNorm(groups=2, dtype=policy)(keras.ops.full((2, 4, 8), 70000.0))
        assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), 0.0)
        rng = np.random.default_rng(15)
        x = (rng.normal(size=(2, 3, 8)) * 3e4 + 7e4).astype("float32")
        mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
        y = keras.ops.convert_to_numpy(
            keras.ops.cast(GroupNorm(groups=2, dtype=policy)(x, mask=mask), "float32")
        )
        expected = reference_group_norm(x, 2, -1, 1.0, 0.0, 1e-3, mask=mask)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y[mask], expected[mask], atol=5e-2, rtol=2e-2)

    def test_run_layer_test(self, tmp_path):
        x = np.random.default_rng(6).normal(size=(2, 3, 4, 6)).astype("float32")
        run_layer_test(
            GroupNorm,
            {"groups": 3, "axis": -1},
            x,
            expected_output_shape=(2, 3, 4, 6),
            expected_num_trainable_weights=2,
            tmp_path=tmp_path,
        )
        run_layer_test(
            GroupNorm,
            {"groups": -1, "center": False, "scale": False},
            x[:, 0],
            expected_output_shape=(2, 4, 6),
            expected_num_trainable_weights=0,
            run_training=False,
        )

    def test_config_keeps_groups_minus_one(self):
        layer = GroupNorm(groups=-1, axis=1, epsilon=1e-4, gamma_regularizer="l2")
        layer(np.zeros((2, 4, 3), "float32"))
        config = layer.get_config()
        assert config["groups"] == -1 and config["axis"] == 1 and config["epsilon"] == 1e-4
        restored = assert_config_round_trip(layer)
        assert restored.groups == -1
        signature = inspect.signature(GroupNorm.__init__).parameters
        assert set(signature) - {"self", "kwargs"} <= set(config)

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"groups": 0}, "groups"),
            ({"groups": -2}, "groups"),
            ({"axis": 0}, "axis"),
            ({"epsilon": 0.0}, "epsilon"),
            ({"epsilon": -1e-3}, "epsilon"),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_constructor_arguments(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            GroupNorm(**kwargs)

    @pytest.mark.backend_free
    def test_invalid_type_arguments(self):
        with pytest.raises(TypeError, match="groups"):
            GroupNorm(groups=True)
        with pytest.raises(TypeError, match="groups"):
            GroupNorm(groups=2.0)
        with pytest.raises(TypeError, match="axis"):
            GroupNorm(axis=[1, 2])
        with pytest.raises(TypeError, match="center"):
            GroupNorm(center=1)

    @pytest.mark.parametrize(
        "kwargs, shape, pattern",
        [
            ({"groups": 4}, (2, 3, 6), r"groups=4.*\(2, 3, 6\)"),
            ({"groups": 8}, (2, 3, 6), r"groups=8.*\(2, 3, 6\)"),
            ({"groups": 2, "axis": -3}, (2, 3, 6), r"axis=-3.*\(2, 3, 6\)"),
            ({"groups": 2, "axis": 3}, (2, 3, 6), r"axis=3"),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_at_build(self, kwargs, shape, pattern):
        with pytest.raises(ValueError, match=pattern):
            GroupNorm(**kwargs).build(shape)

    @pytest.mark.backend_free
    def test_unknown_channel_dimension(self):
        with pytest.raises(ValueError, match=r"axis.*None"):
            GroupNorm(groups=2)(keras.Input((3, None)))

    def test_mask_with_channels_at_time_axis_is_rejected(self):
        layer = GroupNorm(groups=2, axis=1)
        with pytest.raises(ValueError, match="axis=1"):
            layer(np.ones((2, 4, 3), "float32"), mask=np.ones((2, 4), bool))

    @pytest.mark.tensorflow_only
    def test_export_serves_masked_model(self, tmp_path):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2, 5, 4)).astype("float32")
        x[0, 3:] = 0.0
        inputs = keras.Input((5, 4))
        hidden = keras.layers.Masking(0.0)(inputs)
        hidden = GroupNorm(groups=2, beta_initializer="random_normal")(hidden)
        outputs = keras.layers.GlobalAveragePooling1D()(hidden)
        model = keras.Model(inputs, outputs)
        assert_export_serves(model, x, tmp_path)
