"""Group normalization whose statistics respect the Keras mask."""

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export


@keras_gradkit_export
class GroupNorm(keras.layers.Layer):
    """Group normalization that computes its statistics over unmasked steps only.

    A drop-in replacement for `keras.layers.GroupNormalization` for padded
    sequence batches. Keras's layer passes the mask through but includes the
    padded steps in the mean and variance, so adding padding changes the
    outputs at the real steps. Here, given a mask of shape `(batch, time)` on
    an input of shape `(batch, time, ...)`, each (sample, group) is normalized
    with the mean and variance of its unmasked steps, so the outputs at real
    steps do not depend on how much padding follows. Without a mask the layer
    gives the same results as `keras.layers.GroupNormalization`.

    The channels along `axis` are split into `groups` groups of
    `C / groups` channels. For each sample `n` and group `g`, with `S` the set
    of positions (all non-batch, non-channel positions of unmasked steps, and
    the channels of the group):

        mu = mean_{i in S} x_i,    sigma^2 = mean_{i in S} (x_i - mu)^2
        y_i = gamma_c * (x_i - mu) / sqrt(sigma^2 + epsilon) + beta_c

    `groups=-1` (one channel per group) is instance normalization and
    `groups=1` is layer normalization over all channels. Statistics are
    computed in float32 even under `mixed_float16`/`mixed_bfloat16`: inputs
    are not cast to the compute dtype on the way in (so a float32 input above
    float16's maximum still gives finite outputs), `gamma` and `beta` stay
    float32, and the output is in the compute dtype.

    Args:
        groups: int, the number of groups; must divide the channel count.
            `-1` means one group per channel (instance normalization).
            Defaults to `32`.
        axis: int, the channel axis. Must not be the batch axis. With a mask,
            it must not be the time axis `1` either. Defaults to `-1`.
        epsilon: positive float added to the variance. Defaults to `1e-3`.
        center: bool, whether to add the learned offset `beta`.
            Defaults to `True`.
        scale: bool, whether to multiply by the learned `gamma`.
            Defaults to `True`.
        beta_initializer: initializer for `beta`. Defaults to `"zeros"`.
        gamma_initializer: initializer for `gamma`. Defaults to `"ones"`.
        beta_regularizer: optional regularizer for `beta`. Defaults to `None`.
        gamma_regularizer: optional regularizer for `gamma`.
            Defaults to `None`.
        beta_constraint: optional constraint for `beta`. Defaults to `None`.
        gamma_constraint: optional constraint for `gamma`. Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of rank >= 2, e.g. `(batch, time, channels)` or
            `(batch, height, width, channels)`.
        mask: optional boolean tensor of shape `(batch, time)`, marking the
            real steps along axis 1. Passed through unchanged.

    Returns:
        A tensor of the same shape as `inputs`, in the compute dtype.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> x[1, 3:] = 0.0  # padding
    >>> inputs = keras.Input((None, 8))
    >>> h = keras.layers.Masking(0.0)(inputs)
    >>> h = keras_gradkit.layers.GroupNorm(groups=4)(h)
    >>> outputs = keras.layers.LSTM(3)(h)
    >>> tuple(keras.Model(inputs, outputs)(x).shape)
    (2, 3)

    References:
        Wu et al., [Group Normalization](https://arxiv.org/abs/1803.08494),
        2018.
    """

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.integer("groups", groups)
        if groups < 1 and groups != -1:
            raise ValueError(
                "Argument `groups` must be a positive integer, or -1 for one "
                f"group per channel. Received: groups={groups!r}"
            )
        _validation.integer("axis", axis)
        if axis == 0:
            raise ValueError("Argument `axis` must not be the batch axis 0. Received: axis=0")
        epsilon = _validation.positive_float("epsilon", epsilon)
        _validation.bool_arg("center", center)
        _validation.bool_arg("scale", scale)
        self.groups = groups
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.supports_masking = True
        # Inputs reach the float32 statistics uncast: a float16 copy of an
        # input above 65504 would already be inf (as in keras issue #22586).
        self.autocast = False

    def build(self, input_shape):
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(
                "`GroupNorm` needs inputs of rank >= 2 (batch, ..., channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"Argument `axis` must point at a non-batch axis of the input. "
                f"Received: axis={self.axis}, input_shape={tuple(input_shape)}"
            )
        self._axis = self.axis % rank
        channels = input_shape[self._axis]
        if channels is None:
            raise ValueError(
                f"The channel axis {self.axis} must have a known size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._groups = channels if self.groups == -1 else self.groups
        if self._groups > channels or channels % self._groups:
            raise ValueError(
                f"Argument `groups` must divide the number of channels "
                f"{channels} (axis {self.axis}) and be at most that. Received: "
                f"groups={self.groups}, input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.InputSpec(ndim=rank, axes={self._axis: channels})
        self.gamma = None
        self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                shape=(channels,),
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=(channels,),
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        channels = inputs.shape[self._axis]
        # Group shape: the channel axis splits into (groups, channels/groups).
        dynamic = ops.shape(inputs)
        group_shape = [d if d is not None else dynamic[i] for i, d in enumerate(inputs.shape)]
        group_shape[0] = -1
        group_shape[self._axis : self._axis + 1] = [self._groups, channels // self._groups]
        x = ops.cast(ops.reshape(inputs, group_shape), "float32")
        reduce_axes = [i for i in range(1, rank + 1) if i != self._axis]
        if mask is None:
            mean, variance = ops.moments(x, axes=reduce_axes, keepdims=True)
        else:
            mean, variance = self._masked_moments(x, mask, reduce_axes)
        param_shape = [1] * (rank + 1)
        param_shape[self._axis : self._axis + 2] = [self._groups, channels // self._groups]
        inv = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * ops.reshape(ops.cast(self.gamma, "float32"), param_shape)
        offset = -mean * inv
        if self.center:
            offset = offset + ops.reshape(ops.cast(self.beta, "float32"), param_shape)
        outputs = ops.reshape(x * inv + offset, dynamic)
        return ops.cast(outputs, self.compute_dtype)

    def _masked_moments(self, x, mask, reduce_axes):
        rank = len(x.shape) - 1
        if rank < 3 or self._axis == 1 or len(mask.shape) != 2:
            raise ValueError(
                "A mask must have shape (batch, time) and the input shape "
                "(batch, time, ..., channels) with the channel axis after the "
                f"time axis. Received: mask shape {tuple(mask.shape)}, input "
                f"rank {rank}, axis={self.axis}"
            )
        weights = ops.cast(mask, "float32")
        weights = ops.reshape(weights, tuple(ops.shape(weights)) + (1,) * (rank - 1))
        per_step = 1
        for axis in reduce_axes[1:]:
            per_step = per_step * ops.shape(x)[axis]
        steps = ops.sum(weights, axis=reduce_axes, keepdims=True)
        count = steps * ops.cast(per_step, "float32")
        # An all-masked sample gets mean 0 and variance 0: finite, never 0/0.
        count = ops.maximum(count, 1.0)
        mean = ops.sum(x * weights, axis=reduce_axes, keepdims=True) / count
        centered = (x - mean) * weights
        variance = ops.sum(ops.square(centered), axis=reduce_axes, keepdims=True) / count
        return mean, variance

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}
