"""Cosine normalization: dense and convolution layers whose pre-activation is
the cosine between the input (patch) and each weight vector."""

import math

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export


class _CosineNormBase(keras.layers.Layer):
    """Shared arguments, weights and arithmetic of the cosine-normalized layers.

    Subclasses compute the numerator `x . w_j` and the squared input norm
    `|x|^2` (per row or per patch); this class adds the bias, the kernel norm
    and the scale: `scale * num / (|x| |w|)`.
    """

    def __init__(
        self,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        activity_regularizer,
        kernel_constraint,
        bias_constraint,
        scale,
        learn_scale,
        centered,
        epsilon,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.use_bias = _validation.bool_arg("use_bias", use_bias)
        self.learn_scale = _validation.bool_arg("learn_scale", learn_scale)
        self.centered = _validation.bool_arg("centered", centered)
        self.scale = _validation.finite_float("scale", scale, nonzero=True)
        self.epsilon = _validation.positive_float("epsilon", epsilon)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _build_weights(self, kernel_shape, units):
        # Float32 weights read as float32: the norms need the range.
        self.kernel = self.add_weight(
            shape=kernel_shape,
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(units,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,
            )
        self.scale_weight = None
        if self.learn_scale:
            self.scale_weight = self.add_weight(
                shape=(),
                name="scale",
                initializer=keras.initializers.Constant(self.scale),
                autocast=False,
            )

    def _kernel(self):
        """The kernel in float32, centered over its reduced axes if asked."""
        kernel = ops.cast(self.kernel, "float32")
        if self.centered:
            axes = tuple(range(len(kernel.shape) - 1))
            kernel = kernel - ops.mean(kernel, axis=axes, keepdims=True)
        return kernel

    def _cosine(self, numerator, input_norm_squared, kernel):
        """`scale * (num + b) / (sqrt(|x|^2 [+1] + eps) sqrt(|w|^2 [+b^2] + eps))`."""
        axes = tuple(range(len(kernel.shape) - 1))
        kernel_norm_squared = ops.sum(ops.square(kernel), axis=axes)
        if self.use_bias:
            bias = ops.cast(self.bias, "float32")
            numerator = numerator + bias
            kernel_norm_squared = kernel_norm_squared + ops.square(bias)
            input_norm_squared = input_norm_squared + 1.0
        outputs = (
            numerator
            * ops.rsqrt(input_norm_squared + self.epsilon)
            * ops.rsqrt(kernel_norm_squared + self.epsilon)
        )
        scale = self.scale if self.scale_weight is None else ops.cast(self.scale_weight, "float32")
        outputs = ops.cast(scale * outputs, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = {
            "use_bias": self.use_bias,
            "scale": self.scale,
            "learn_scale": self.learn_scale,
            "centered": self.centered,
            "epsilon": self.epsilon,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
        }
        return {**super().get_config(), **config}


@keras_gradkit_export
class CosineDense(_CosineNormBase):
    """Densely-connected layer with cosine normalization.

    Use it in place of `keras.layers.Dense` in deep networks whose
    activations saturate, or as a cosine classifier head. Each output is the
    cosine similarity between the input and that unit's weight vector, so the
    pre-activation is bounded by `|scale|` whatever the input magnitude, and
    the gradients do not grow or shrink with the scale of the weights.

        y_j = act(scale * (x . w_j) / (|x| |w_j|))

    With `use_bias=True` the bias is a weight on a constant input 1:

        y_j = act(scale * (x . w_j + b_j)
                  / (sqrt(|x|^2 + 1) * sqrt(|w_j|^2 + b_j^2)))

    so `|y_j| <= |scale|` still holds before the activation. `centered=True`
    is the paper's Pearson-correlation variant: `x` and `w_j` are centered
    over the reduced (last) axis before the products and norms. `epsilon` is
    added under each square root, so a zero input gives 0 with finite
    gradients. Computed in float32 under mixed precision; output in the compute
    dtype. Bounded outputs train with larger learning rates than usual (the
    paper used lr 10 for cosine networks where the baseline used 0.1).

    The arguments are those of `keras.layers.Dense`, in the same positions
    (`CosineDense(10, "relu")` is `units=10, activation="relu"`), followed by
    the cosine-specific ones. One default differs: `use_bias=False`, because
    the paper's cosine has no bias and a bias changes the bounded quantity.
    As `Dense`, the layer passes a mask on unchanged, so
    `Masking -> CosineDense -> LSTM` still skips the padded steps.

    Args:
        units: positive int, the output dimension.
        activation: activation applied to the scaled cosine.
            Defaults to `None`.
        use_bias: bool, whether to add the bias (as a weight on a constant
            input 1). Defaults to `False` (`Dense` defaults to `True`).
        kernel_initializer: initializer for the kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer for the kernel.
            Defaults to `None`.
        bias_regularizer: optional regularizer for the bias.
            Defaults to `None`.
        activity_regularizer: optional regularizer for the output.
            Defaults to `None`.
        kernel_constraint: optional constraint for the kernel.
            Defaults to `None`.
        bias_constraint: optional constraint for the bias. Defaults to `None`.
        scale: finite non-zero float multiplying the cosine. Defaults to `1.0`.
        learn_scale: bool, if `True` the scale is a trainable scalar
            initialized to `scale` (the cosine-classifier form of NormFace).
            Defaults to `False`.
        centered: bool, use the Pearson correlation instead of the cosine.
            Defaults to `False`.
        epsilon: positive float added under the square roots of the squared
            norms. Defaults to `1e-7`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, ..., input_dim)`, rank >= 2.
        mask: optional mask, e.g. `(batch, time)` from `Masking`; not used in
            the computation and passed on unchanged.

    Returns:
        A tensor of shape `(batch, ..., units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> layer = keras_gradkit.layers.CosineDense(4, "tanh", True, scale=10.0)
    >>> y = keras.ops.convert_to_numpy(layer(np.random.rand(2, 3).astype("float32")))
    >>> y.shape, bool(np.all(np.abs(y) <= 1.0))
    ((2, 4), True)

    References:
        Luo et al., [Cosine Normalization: Using Cosine Similarity Instead of
        Dot Product in Neural Networks](https://arxiv.org/abs/1702.05870),
        2017.
        Wang et al., [NormFace: L2 Hypersphere Embedding for Face
        Verification](https://arxiv.org/abs/1704.06369), 2017.
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        scale=1.0,
        learn_scale=False,
        centered=False,
        epsilon=1e-7,
        **kwargs,
    ):
        units = _validation.positive_int("units", units)
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            activity_regularizer,
            kernel_constraint,
            bias_constraint,
            scale,
            learn_scale,
            centered,
            epsilon,
            **kwargs,
        )
        self.units = units
        # As keras.layers.Dense: the mask of a (batch, time, features) input
        # is passed on unchanged.
        self.supports_masking = True
        self.input_spec = keras.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last axis of the input must have a known size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._build_weights((input_dim, self.units), self.units)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.centered:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        kernel = self._kernel()
        numerator = ops.matmul(x, kernel)
        input_norm_squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
        return self._cosine(numerator, input_norm_squared, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class _CosineConv(_CosineNormBase):
    """Cosine-normalized convolution over `rank` spatial dimensions.

    The numerator convolves the input with the (centered) kernel; the squared
    norm of every input patch is the channel-summed `x^2` convolved with a ones
    kernel, so no patches are materialized.
    """

    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides,
        padding,
        data_format,
        dilation_rate,
        groups,
        **kwargs,
    ):
        filters = _validation.positive_int("filters", filters)
        kernel_size = _validation.int_tuple("kernel_size", kernel_size, self.rank)
        strides = _validation.int_tuple("strides", strides, self.rank)
        dilation_rate = _validation.int_tuple("dilation_rate", dilation_rate, self.rank)
        allowed = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        padding = _validation.one_of(
            "padding", padding.lower() if isinstance(padding, str) else padding, allowed
        )
        if data_format is None:
            data_format = keras.config.image_data_format()
        _validation.one_of("data_format", data_format, ("channels_last", "channels_first"))
        if groups != 1:
            raise ValueError(
                "Argument `groups` must be 1: grouped cosine convolutions are not "
                f"supported. Received: groups={groups!r}"
            )
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(
                "Arguments `strides` > 1 and `dilation_rate` > 1 cannot be "
                f"combined. Received: strides={strides}, dilation_rate={dilation_rate}"
            )
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate
        self.groups = groups
        # As keras.layers.Conv1D/Conv2D: masks are not supported.
        self.supports_masking = False
        self.input_spec = keras.InputSpec(ndim=self.rank + 2)

    def build(self, input_shape):
        channel_axis = -1 if self.data_format == "channels_last" else 1
        channels = input_shape[channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel axis {channel_axis} must have a known size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._build_weights(self.kernel_size + (channels, self.filters), self.filters)
        self.input_spec = keras.InputSpec(ndim=self.rank + 2, axes={channel_axis: channels})

    def _conv(self, x, kernel, padding):
        return ops.conv(
            x,
            kernel,
            strides=self.strides,
            padding=padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.data_format == "channels_first":
            x = ops.moveaxis(x, 1, -1)
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            x = ops.pad(x, ((0, 0), (left, 0), (0, 0)))
            padding = "valid"
        kernel = self._kernel()
        ones = ops.ones(self.kernel_size + (1, 1), dtype="float32")
        numerator = self._conv(x, kernel, padding)
        input_norm_squared = self._conv(
            ops.sum(ops.square(x), axis=-1, keepdims=True), ones, padding
        )
        if self.centered:
            # |x - m|^2 = sum x^2 - (sum x)^2 / n over each patch; the kernel
            # is centered, so conv(x, kernel) is already the centered product.
            patch_size = math.prod(self.kernel_size) * x.shape[-1]
            patch_sum = self._conv(ops.sum(x, axis=-1, keepdims=True), ones, padding)
            input_norm_squared = ops.maximum(
                input_norm_squared - ops.square(patch_sum) / patch_size, 0.0
            )
        outputs = self._cosine(numerator, input_norm_squared, kernel)
        if self.data_format == "channels_first":
            outputs = ops.moveaxis(outputs, -1, 1)
        return outputs

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_first":
            spatial = input_shape[2:]
        else:
            spatial = input_shape[1:-1]
        out = []
        for size, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate):
            if size is None:
                out.append(None)
            elif self.padding in ("same", "causal"):
                out.append((size + s - 1) // s if self.padding == "same" else size)
            else:
                out.append((size - (k - 1) * d - 1) // s + 1)
        if self.data_format == "channels_first":
            return (input_shape[0], self.filters) + tuple(out)
        return (input_shape[0],) + tuple(out) + (self.filters,)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
        }
        return {**super().get_config(), **config}


_CONV_ARGS_DOC = """
    The arguments are those of `keras.layers.Conv{rank}D`, in the same
    positions, followed by the cosine-specific ones. One default differs:
    `use_bias=False`, because the paper's cosine has no bias. As
    `Conv{rank}D`, the layer does not support masks.

    Args:
        filters: positive int, the number of output filters.
        kernel_size: int or tuple of {rank} ints, the window size.
        strides: int or tuple of {rank} ints. Defaults to `1`.
        padding: {padding}, as in `keras.layers.Conv{rank}D`; padded
            zeros count as part of the patch. Defaults to `"valid"`.
        data_format: `"channels_last"`, `"channels_first"` or `None` for
            `keras.config.image_data_format()`. Defaults to `None`.
        dilation_rate: int or tuple of {rank} ints; cannot be combined with
            strides > 1. Defaults to `1`.
        groups: must be `1` (kept for `Conv{rank}D`'s argument positions;
            grouped cosine convolutions are not supported). Defaults to `1`.
        activation: activation applied to the scaled cosine.
            Defaults to `None`.
        use_bias: bool, whether to add the bias (as a weight on a constant
            input 1). Defaults to `False` (`Conv{rank}D` defaults to `True`).
        kernel_initializer: initializer for the kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer for the kernel.
            Defaults to `None`.
        bias_regularizer: optional regularizer for the bias.
            Defaults to `None`.
        activity_regularizer: optional regularizer for the output.
            Defaults to `None`.
        kernel_constraint: optional constraint for the kernel.
            Defaults to `None`.
        bias_constraint: optional constraint for the bias. Defaults to `None`.
        scale: finite non-zero float multiplying the cosine. Defaults to `1.0`.
        learn_scale: bool, if `True` the scale is a trainable scalar
            initialized to `scale`. Defaults to `False`.
        centered: bool, use the Pearson correlation (patch and filter centered
            over the patch) instead of the cosine. Defaults to `False`.
        epsilon: positive float added under the square roots of the squared
            norms. Defaults to `1e-7`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).
"""


@keras_gradkit_export
class CosineConv1D(_CosineConv):
    """1D convolution with cosine normalization.

    Use it in place of `keras.layers.Conv1D` in deep convolutional stacks
    over sequences whose activations saturate. Each output is the cosine
    between a filter and the input patch under it, so it is bounded by
    `|scale|` whatever the input scale:

        y[t, j] = act(scale * (P_t . w_j + b_j)
                      / (sqrt(|P_t|^2 [+ 1] + eps) * sqrt(|w_j|^2 [+ b_j^2] + eps)))

    where `P_t` is the (zero-padded) patch of `kernel_size * channels` input
    values under output position `t`, and the bracketed terms are present
    with `use_bias=True`. `|P_t|^2` is obtained by convolving the
    channel-summed `x^2` with a ones kernel, so no patches are materialized.
    A zero patch gives 0 with finite gradients. Computed in float32 under
    mixed precision; output in the compute dtype.
    {args}
    Call arguments:
        inputs: tensor of shape `(batch, steps, channels)`
            (`(batch, channels, steps)` for `"channels_first"`).

    Returns:
        A tensor of shape `(batch, new_steps, filters)`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.CosineConv1D(4, 3, padding="causal")
    >>> tuple(layer(np.random.rand(2, 10, 3).astype("float32")).shape)
    (2, 10, 4)

    References:
        Luo et al., [Cosine Normalization: Using Cosine Similarity Instead of
        Dot Product in Neural Networks](https://arxiv.org/abs/1702.05870),
        2017.
    """

    rank = 1

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        scale=1.0,
        learn_scale=False,
        centered=False,
        epsilon=1e-7,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            scale=scale,
            learn_scale=learn_scale,
            centered=centered,
            epsilon=epsilon,
            **kwargs,
        )


@keras_gradkit_export
class CosineConv2D(_CosineConv):
    """2D convolution with cosine normalization.

    Use it in place of `keras.layers.Conv2D` in deep convolutional networks
    whose activations saturate. Each output is the cosine between a filter
    and the input patch under it, so it is bounded by `|scale|` whatever the
    input scale:

        y[h, w, j] = act(scale * (P_hw . w_j + b_j)
                         / (sqrt(|P_hw|^2 [+ 1] + eps) * sqrt(|w_j|^2 [+ b_j^2] + eps)))

    where `P_hw` is the (zero-padded) `kh * kw * channels` patch under output
    position `(h, w)`, and the bracketed terms are present with
    `use_bias=True`. `|P_hw|^2` is obtained by convolving the channel-summed
    `x^2` with a ones kernel, so no patches are materialized. A zero patch
    gives 0 with finite gradients. Computed in float32 under mixed precision;
    output in the compute dtype.
    {args}
    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`
            (`(batch, channels, height, width)` for `"channels_first"`).

    Returns:
        A tensor of shape `(batch, new_height, new_width, filters)`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.CosineConv2D(8, 3, padding="same", use_bias=True)
    >>> tuple(layer(np.random.rand(2, 6, 6, 3).astype("float32")).shape)
    (2, 6, 6, 8)

    References:
        Luo et al., [Cosine Normalization: Using Cosine Similarity Instead of
        Dot Product in Neural Networks](https://arxiv.org/abs/1702.05870),
        2017.
    """

    rank = 2

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        scale=1.0,
        learn_scale=False,
        centered=False,
        epsilon=1e-7,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            scale=scale,
            learn_scale=learn_scale,
            centered=centered,
            epsilon=epsilon,
            **kwargs,
        )


CosineConv1D.__doc__ = CosineConv1D.__doc__.replace(
    "{args}", _CONV_ARGS_DOC.format(rank=1, padding='`"valid"`, `"same"` or `"causal"`')
)
CosineConv2D.__doc__ = CosineConv2D.__doc__.replace(
    "{args}", _CONV_ARGS_DOC.format(rank=2, padding='`"valid"` or `"same"`')
)
