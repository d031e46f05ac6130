"""Weight normalization: a wrapper that reparameterizes a layer's kernel as a
direction and a per-unit length."""

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_SUPPORTED = (keras.layers.Dense,) + _CONVS + _TRANSPOSED
# Statistics of the first batch: variance floor for units that are constant.
_INIT_EPSILON = 1e-6


@keras_gradkit_export
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalization of a `Dense` or convolution layer.

    Use it to speed up and stabilize the training of deep networks where batch
    normalization does not fit: recurrent or small-batch models, noisy
    objectives (reinforcement learning, generative models), or when the
    output must not depend on the rest of the batch. Each output unit's weight
    vector `w` is split into a direction `v` (the wrapped layer's `kernel`,
    reachable as `.layer.kernel`) and a length `g` (the wrapper's weight
    `.g`, one per output unit):

        w_j = g_j * v_j / ||v_j||,    y = act(x . w + b)

    so the gradient with respect to `v_j` is orthogonal to `v_j` and the
    length is learned on its own. `v_j` holds all kernel entries feeding unit
    `j` (for a convolution, the whole `kernel_size x channels` filter). `g`
    starts at `||v_j||`, so before any training the wrapper computes exactly
    what the wrapped layer computes.

    `data_init=True` is the paper's data-dependent initialization: in the
    first call with `training=True` (the first `fit` step), with
    `t = x . v / ||v||` the pre-activations of that batch, the length and bias
    are set to `g = 1 / std(t)` and `b = -mean(t) / std(t)` per unit (means
    over the batch and all spatial positions), so that the batch's
    pre-activations have zero mean and unit variance. It happens once: a
    non-trainable flag records it, is saved with the model, and a reloaded
    model does not initialize again. The values set this way are kept in the
    non-trainable offsets `g_offset` and `bias_offset`, added to `g` and to
    the wrapped layer's bias, because a train step may not write trainable
    variables on every backend; the gradients and optimizer updates are those
    of the paper's `g` and `b`. Without a bias (`use_bias=False`) only the
    variance is set. The decision is made with `ops.cond` on the flag, so it
    works under `jit_compile=True`.

    The norms are computed in float32 under mixed precision; the product with
    the input runs in the compute dtype. Masks are passed on as the wrapped
    layer passes them (`Dense` does, convolutions do not).

    Args:
        layer: a `keras.layers.Dense`, `Conv1D`, `Conv2D`, `Conv3D`, or
            `Conv1DTranspose`/`Conv2DTranspose`/`Conv3DTranspose` (or a
            subclass), built or not. Its kernel becomes `v`; its bias and
            activation are used as they are.
        data_init: bool, whether to apply the data-dependent initialization
            on the first training batch. Defaults to `True`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...). The
            dtype policy defaults to the wrapped layer's.

    Call arguments:
        inputs: input tensor of the wrapped layer, e.g. `(batch, features)`
            for `Dense` or `(batch, height, width, channels)` for `Conv2D`.
        training: bool, whether the call is a training step (data
            initialization happens only then).

    Returns:
        The wrapped layer's output for the normalized kernel, same shape as
        the wrapped layer's output.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> layer = keras_gradkit.layers.WeightNormalization(keras.layers.Dense(4))
    >>> x = np.random.rand(8, 3).astype("float32")
    >>> y = layer(x, training=True)  # first training batch: data init
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y).mean(axis=0), 0.0, atol=1e-4))
    True
    >>> tuple(layer.g.shape), tuple(layer.layer.kernel.shape)
    ((4,), (3, 4))

    References:
        Salimans & Kingma, [Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks](
        https://arxiv.org/abs/1602.07868), 2016.
    """

    def __init__(self, layer, data_init=True, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Argument `layer` must be a Keras layer with a `kernel` (Dense, "
                f"Conv1D/2D/3D or their transposed forms). Received: layer={layer!r}"
            )
        if not isinstance(layer, _SUPPORTED):
            raise TypeError(
                "Argument `layer` must be a Dense, Conv1D/2D/3D or "
                "Conv1D/2D/3DTranspose layer: WeightNormalization normalizes "
                f"their `kernel`, and {type(layer).__name__} has none. "
                f"Received: layer={layer.name!r} of type {type(layer).__name__}"
            )
        _validation.bool_arg("data_init", data_init)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        # Inputs and the kernel reach `call` uncast: the norms need float32.
        self.autocast = False
        self.supports_masking = layer.supports_masking
        self.input_spec = getattr(layer, "input_spec", None)

    # Where the output units sit in the kernel and in the outputs.
    def _kernel_unit_axis(self):
        return -2 if isinstance(self.layer, _TRANSPOSED) else -1

    def _output_unit_axis(self, rank):
        if isinstance(self.layer, keras.layers.Dense):
            return rank - 1
        return 1 if self.layer.data_format == "channels_first" else rank - 1

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self.layer.kernel
        units = kernel.shape[self._kernel_unit_axis()]
        self.g = self.add_weight(shape=(units,), name="g", initializer="ones", autocast=False)
        self.g.assign(self._kernel_norm(ops.convert_to_tensor(kernel)))
        if self.data_init:
            self.g_offset = self._add_state("g_offset", (units,), "zeros", "float32")
            self.bias_offset = self._add_state("bias_offset", (units,), "zeros", "float32")
            self.initialized = self._add_state("initialized", (), "zeros", "bool")
        self.built = True

    def _add_state(self, name, shape, initializer, dtype):
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            autocast=False,
        )

    def _reduce_axes(self, rank, unit_axis):
        return tuple(i for i in range(rank) if i != unit_axis % rank)

    def _kernel_norm(self, kernel):
        kernel = ops.cast(kernel, "float32")
        axes = self._reduce_axes(len(kernel.shape), self._kernel_unit_axis())
        # The floor only matters for an all-zero direction (0/0 otherwise).
        return ops.sqrt(ops.maximum(ops.sum(ops.square(kernel), axis=axes), 1e-24))

    def _unit_shape(self, rank, unit_axis):
        shape = [1] * rank
        shape[unit_axis] = -1
        return shape

    def _direction(self):
        """`v / ||v||` per unit, float32."""
        v = ops.cast(ops.convert_to_tensor(self.layer.kernel), "float32")
        rank = len(v.shape)
        norm = ops.reshape(
            self._kernel_norm(v), self._unit_shape(rank, self._kernel_unit_axis() % rank)
        )
        return v / norm

    def _linear(self, inputs, kernel):
        """The wrapped layer's product `x . w`, without bias and activation."""
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            return ops.matmul(inputs, kernel)
        if isinstance(layer, _TRANSPOSED):
            return ops.conv_transpose(
                inputs,
                kernel,
                strides=list(layer.strides),
                padding=layer.padding,
                output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
        padding = layer.padding
        if padding == "causal":
            left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
            time_axis = 1 if layer.data_format == "channels_last" else 2
            pads = [[0, 0], [0, 0], [0, 0]]
            pads[time_axis] = [left, 0]
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        return ops.conv(
            inputs,
            kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    def _bias(self):
        if getattr(self.layer, "use_bias", False) and self.layer.bias is not None:
            return ops.cast(ops.convert_to_tensor(self.layer.bias), "float32")
        return None

    def _first_batch_offsets(self, inputs, direction, g, bias):
        """Offsets that give the batch's pre-activations zero mean, unit variance."""
        t = ops.cast(self._linear(ops.cast(inputs, "float32"), direction), "float32")
        rank = len(t.shape)
        axes = self._reduce_axes(rank, self._output_unit_axis(rank))
        mean, variance = ops.moments(ops.stop_gradient(t), axes=axes)
        inv_std = ops.rsqrt(variance + _INIT_EPSILON)
        bias_offset = ops.zeros_like(inv_std) if bias is None else -mean * inv_std - bias
        return inv_std - g, bias_offset

    def _offsets(self, inputs, direction, g, bias, training):
        if not self.data_init:
            return None, None
        if not training:
            return ops.convert_to_tensor(self.g_offset), ops.convert_to_tensor(self.bias_offset)
        g_offset, bias_offset = ops.cond(
            ops.logical_not(self.initialized),
            lambda: self._first_batch_offsets(inputs, direction, g, bias),
            lambda: (ops.convert_to_tensor(self.g_offset), ops.convert_to_tensor(self.bias_offset)),
        )
        self.g_offset.assign(g_offset)
        self.bias_offset.assign(bias_offset)
        self.initialized.assign(True)
        return g_offset, bias_offset

    def call(self, inputs, training=None):
        direction = self._direction()
        g = ops.cast(ops.convert_to_tensor(self.g), "float32")
        bias = self._bias()
        g_offset, bias_offset = self._offsets(inputs, direction, g, bias, training)
        if g_offset is not None:
            g = g + g_offset
            if bias is not None:
                bias = bias + bias_offset
        rank = len(direction.shape)
        unit_shape = self._unit_shape(rank, self._kernel_unit_axis() % rank)
        kernel = ops.cast(direction * ops.reshape(g, unit_shape), self.compute_dtype)
        outputs = self._linear(ops.cast(inputs, self.compute_dtype), kernel)
        if bias is not None:
            out_rank = len(outputs.shape)
            bias_shape = self._unit_shape(out_rank, self._output_unit_axis(out_rank))
            outputs = outputs + ops.reshape(ops.cast(bias, self.compute_dtype), bias_shape)
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        return {**super().get_config(), "data_init": self.data_init}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's Wrapper pops "layer" from the dict it is given; keep the
        # caller's config intact.
        return super().from_config(dict(config), custom_objects=custom_objects)
