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
_SUPPORTED = (keras.layers.Dense,) + _CONVS + _TRANSPOSED + (keras.layers.RNN,)
# Statistics of the first batch: variance floor for units that are constant.
_INIT_EPSILON = 1e-6
# `rnn_kernel`: the cell's kernels it normalizes, and the lengths of each.
_RNN_KERNELS = {
    "auto": None,  # resolved once the layer is built: see `_kernel_names`
    "recurrent": ("recurrent_kernel",),
    "input": ("kernel",),
    "both": ("kernel", "recurrent_kernel"),
}
_LENGTHS = {"kernel": "g", "recurrent_kernel": "recurrent_g"}


@keras_gradkit_export
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalization of a `Dense`, convolution or recurrent layer.

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

    A recurrent layer (`keras.layers.SimpleRNN`, `LSTM`, `GRU`,
    `keras_gradkit.layers.LSTM`, `GRU`, or `keras.layers.RNN` around a cell
    that keeps its kernels in `cell.kernel` and `cell.recurrent_kernel`) has
    its cell's recurrent kernel normalized by default, as tensorflow-addons'
    `WeightNormalization` did: `u = .layer.cell.recurrent_kernel` of shape
    `(units, k * units)`, with one length per column in the wrapper's weight
    `.recurrent_g` (`k = 4` gates for an LSTM, 3 for a GRU, 1 otherwise).
    `rnn_kernel="input"` normalizes the input kernel `v = .layer.cell.kernel`
    of shape `(input_dim, k * units)` instead (its lengths in `.g`), and
    `rnn_kernel="both"` the two, each with its own lengths.
    `keras_gradkit.layers.IndRNN`, whose recurrent kernel is a vector of one
    weight per unit, has its input kernel normalized (the default `"auto"`
    chooses it; `"recurrent"` and `"both"` are refused). The wrapped layer runs
    as usual (masking, `return_sequences`, `return_state`, `go_backwards`,
    `stateful`, initial states), its cell reading the normalized kernels
    during the call; Keras's fused LSTM and GRU implementations get them
    too, as Keras hands them the cell's `kernel` and `recurrent_kernel`.

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
    variance is set. For a recurrent layer only the input kernel's `g` is
    set (with `rnn_kernel="input"` or `"both"`), from the variance of
    `x_t . v / ||v||` over the batch and the (unmasked) time steps; the gate
    biases keep the values their initializers gave them, and there is no
    `bias_offset`. The recurrent kernel's `recurrent_g` is never
    data-initialized: it starts at `||u||`, so the recurrence starts as the
    recurrent initializer made it (the recurrent pre-activations depend on
    the states the layer itself computes, and the paper's recipe is for
    feed-forward ones; tensorflow-addons advised against it for RNNs). So
    with `rnn_kernel="recurrent"` (the default for a matrix recurrent kernel), `data_init` has no effect on
    a recurrent layer. The decision is made with `ops.cond` on the flag, so
    it works under `jit_compile=True`.

    The norms are computed in float32 under mixed precision; the product with
    the input runs in the compute dtype. Masks are passed on as the wrapped
    layer passes them (`Dense` and the recurrent layers do, convolutions do
    not). `remove()` returns a plain layer computing the same outputs.

    Args:
        layer: a `keras.layers.Dense`, `Conv1D`, `Conv2D`, `Conv3D`,
            `Conv1DTranspose`/`Conv2DTranspose`/`Conv3DTranspose`, or a
            `keras.layers.RNN` with a single cell whose kernels are
            `cell.kernel` of shape `(input_dim, k * units)` and
            `cell.recurrent_kernel` of shape `(units, k * units)` (e.g.
            `keras.layers.SimpleRNN`/`LSTM`/`GRU`,
            `keras_gradkit.layers.LSTM`/`GRU`, and
            `keras_gradkit.layers.IndRNN`, input kernel only), or a
            subclass of these, built or not. Its kernel (the cell's kernels
            that `rnn_kernel` chooses, for a recurrent layer) is normalized;
            its bias and activation are used as they are.
        data_init: bool, whether to apply the data-dependent initialization
            on the first training batch (to the input kernel only).
            Defaults to `True`.
        rnn_kernel: `"auto"`, `"recurrent"`, `"input"` or `"both"`: which
            kernel of a recurrent layer's cell is normalized,
            `cell.recurrent_kernel` (lengths `.recurrent_g`), `cell.kernel`
            (lengths `.g`) or both. `"auto"` is `"recurrent"`, as
            tensorflow-addons' `WeightNormalization`, except for a cell
            whose recurrent kernel is a vector (IndRNN), where it is
            `"input"`. Used for recurrent layers only. Defaults to `"auto"`
            (a configuration saved without this argument, by keras_gradkit
            before it existed, loads as `"input"`, what it computed then).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...). The
            dtype policy defaults to the wrapped layer's.

    Call arguments:
        inputs: input tensor of the wrapped layer, e.g. `(batch, features)`
            for `Dense`, `(batch, height, width, channels)` for `Conv2D` or
            `(batch, timesteps, features)` for a recurrent layer.
        training: bool, whether the call is a training step (data
            initialization happens only then).
        mask: optional mask, passed to a recurrent layer (boolean
            `(batch, timesteps)`; its masked steps are also left out of the
            data-dependent initialization). Other layers ignore it, as they
            do without the wrapper.
        initial_state: optional list of initial state tensors, for a
            recurrent layer only.

    Returns:
        The wrapped layer's output for the normalized kernel, same shape (or
        list of outputs and states, for a recurrent layer with
        `return_state=True`) as the wrapped layer's output.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> layer = keras_gradkit.layers.WeightNormalization(keras.layers.Dense(4))
    >>> x = np.random.rand(8, 3).astype("float32")
    >>> y = layer(x, training=True)  # first training batch: data init
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y).mean(axis=0), 0.0, atol=1e-4))
    True
    >>> tuple(layer.g.shape), tuple(layer.layer.kernel.shape)
    ((4,), (3, 4))
    >>> lstm = keras_gradkit.layers.WeightNormalization(keras.layers.LSTM(5))
    >>> tuple(lstm(np.random.rand(2, 6, 3).astype("float32")).shape)
    (2, 5)
    >>> tuple(lstm.recurrent_g.shape), tuple(lstm.layer.cell.recurrent_kernel.shape)  # 4 gates
    ((20,), (5, 20))
    >>> both = keras_gradkit.layers.WeightNormalization(keras.layers.GRU(4), rnn_kernel="both")
    >>> _ = both(np.random.rand(2, 6, 3).astype("float32"))
    >>> tuple(both.g.shape), tuple(both.recurrent_g.shape)  # 3 gates
    ((12,), (12,))

    References:
        Salimans & Kingma, [Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks](
        https://arxiv.org/abs/1602.07868), 2016.
    """

    def __init__(self, layer, data_init=True, rnn_kernel="auto", **kwargs):
        _check_layer(layer)
        _validation.bool_arg("data_init", data_init)
        _validation.one_of("rnn_kernel", rnn_kernel, _RNN_KERNELS)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        self.rnn_kernel = rnn_kernel
        # Inputs and the kernel reach `call` uncast: the norms need float32.
        self.autocast = False
        self.supports_masking = layer.supports_masking
        self.input_spec = getattr(layer, "input_spec", None)

    @property
    def _is_rnn(self):
        return isinstance(self.layer, keras.layers.RNN)

    def _kernel_names(self):
        """The attributes normalized: `kernel` of the layer, or of the RNN's
        cell `kernel`, `recurrent_kernel` or both."""
        if not self._is_rnn:
            return ("kernel",)
        if self.rnn_kernel != "auto":
            return _RNN_KERNELS[self.rnn_kernel]
        # A recurrent kernel that is a vector (IndRNN) has one weight per
        # unit: its normalization would keep only the sign.
        recurrent = vars(self.layer.cell).get("recurrent_kernel")
        vector = isinstance(recurrent, keras.Variable) and len(recurrent.shape) == 1
        return _RNN_KERNELS["input" if vector else "recurrent"]

    @property
    def _initializes(self):
        """Whether data init applies: to an input kernel (never the recurrent one)."""
        return self.data_init and "kernel" in self._kernel_names()

    def _length(self, name):
        """The lengths `g` (input kernel) or `recurrent_g` of the kernel `name`."""
        return getattr(self, _LENGTHS[name])

    # Where the output units sit in the kernel and in the outputs.
    def _kernel_unit_axis(self):
        return -2 if isinstance(self.layer, _TRANSPOSED) else -1

    def _output_unit_axis(self, rank):
        if isinstance(self.layer, keras.layers.Dense):
            return rank - 1
        return 1 if self.layer.data_format == "channels_first" else rank - 1

    def _kernel_variable(self, name="kernel"):
        """`v`: the layer's kernel, or the RNN cell's kernel `name`."""
        if not self._is_rnn:
            return self.layer.kernel
        cell = self.layer.cell
        kernel = vars(cell).get(name)
        if isinstance(kernel, keras.Variable) and len(kernel.shape) == 2:
            return kernel
        got = "missing" if kernel is None else f"a {type(kernel).__name__}"
        if hasattr(kernel, "shape"):
            got += f" of shape {tuple(kernel.shape)}"
        if name == "recurrent_kernel" and hasattr(kernel, "shape") and len(kernel.shape) == 1:
            raise ValueError(
                "Argument `rnn_kernel` must be 'input' for a recurrent layer whose recurrent "
                "kernel is a vector, one weight per unit (as in IndRNN): normalizing a single "
                f"weight per unit would leave only its sign. Received: rnn_kernel={self.rnn_kernel!r}"
                f" for layer {self.layer.name!r}, whose `cell.recurrent_kernel` is {got}"
            )
        shape = "(input_dim, units)" if name == "kernel" else "(units, units)"
        role = "input" if name == "kernel" else "recurrent"
        raise ValueError(
            f"Argument `layer` must be an RNN whose cell keeps its {role} kernel, of shape "
            f"{shape}, in a variable `cell.{name}`: WeightNormalization with "
            f"rnn_kernel={self.rnn_kernel!r} normalizes that kernel. Received: layer="
            f"{self.layer.name!r} with a {type(cell).__name__} cell whose `{name}` is {got}"
        )

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        for name in self._kernel_names():
            kernel = self._kernel_variable(name)
            units = kernel.shape[self._kernel_unit_axis()]
            g = self.add_weight(
                shape=(units,), name=_LENGTHS[name], initializer="ones", autocast=False
            )
            g.assign(self._kernel_norm(ops.convert_to_tensor(kernel)))
            setattr(self, _LENGTHS[name], g)
        if self._initializes:
            units = self.g.shape[0]
            self.g_offset = self._add_state("g_offset", (units,), "zeros", "float32")
            if not self._is_rnn:
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

    def _direction(self, name="kernel"):
        """`v / ||v||` per unit of the kernel `name`, float32."""
        v = ops.cast(ops.convert_to_tensor(self._kernel_variable(name)), "float32")
        rank = len(v.shape)
        norm = ops.reshape(
            self._kernel_norm(v), self._unit_shape(rank, self._kernel_unit_axis() % rank)
        )
        return v / norm

    def _scaled(self, direction, g):
        """The normalized kernel `g * v / ||v||`, float32."""
        rank = len(direction.shape)
        return direction * ops.reshape(g, self._unit_shape(rank, self._kernel_unit_axis() % rank))

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

    def _bias_variable(self):
        """The bias the offsets apply to; None for RNNs (gate biases stay as set)."""
        if self._is_rnn or not getattr(self.layer, "use_bias", False):
            return None
        return self.layer.bias

    def _bias(self):
        bias = self._bias_variable()
        return None if bias is None else ops.cast(ops.convert_to_tensor(bias), "float32")

    def _first_batch_offsets(self, inputs, direction, g, bias, mask):
        """Offsets that give the batch's pre-activations zero mean, unit variance."""
        inputs = ops.cast(inputs, "float32")
        if self._is_rnn:
            t = ops.stop_gradient(ops.matmul(inputs, direction))
            _, variance = _step_moments(t, mask)
            return (ops.rsqrt(variance + _INIT_EPSILON) - g,)
        t = ops.cast(self._linear(inputs, direction), "float32")
        rank = len(t.shape)
        axes = self._reduce_axes(rank, self._output_unit_axis(rank))
        mean, variance = ops.moments(ops.stop_gradient(t), axes=axes)
        inv_std = ops.rsqrt(variance + _INIT_EPSILON)
        bias_offset = ops.zeros_like(inv_std) if bias is None else -mean * inv_std - bias
        return inv_std - g, bias_offset

    def _offset_variables(self):
        return (self.g_offset,) if self._is_rnn else (self.g_offset, self.bias_offset)

    def _offsets(self, inputs, direction, g, bias, training, mask):
        """`(g_offset, bias_offset)` for this call (None when there is none)."""
        if not self._initializes:
            return None, None
        variables = self._offset_variables()
        offsets = tuple(ops.convert_to_tensor(v) for v in variables)
        if training:
            stored = offsets
            offsets = tuple(
                ops.cond(
                    ops.logical_not(self.initialized),
                    lambda: self._first_batch_offsets(inputs, direction, g, bias, mask),
                    lambda: stored,
                )
            )
            for variable, value in zip(variables, offsets):
                variable.assign(value)
            self.initialized.assign(True)
        return offsets[0], (offsets[1] if len(offsets) > 1 else None)

    def call(self, inputs, training=None, mask=None, initial_state=None):
        if initial_state is not None and not self._is_rnn:
            raise ValueError(
                "Argument `initial_state` is for a wrapped RNN layer only. Received: "
                f"initial_state (a {type(initial_state).__name__}) for a wrapped "
                f"{type(self.layer).__name__} layer"
            )
        bias = self._bias()
        kernels = {}
        for name in self._kernel_names():
            direction = self._direction(name)
            g = ops.cast(ops.convert_to_tensor(self._length(name)), "float32")
            if name == "kernel":
                g_offset, bias_offset = self._offsets(inputs, direction, g, bias, training, mask)
                if g_offset is not None:
                    g = g + g_offset
                if bias_offset is not None and bias is not None:
                    bias = bias + bias_offset
            kernels[name] = self._scaled(direction, g)
        if self._is_rnn:
            return self._call_rnn(inputs, kernels, training, mask, initial_state)
        dtype = self.compute_dtype
        outputs = self._linear(ops.cast(inputs, dtype), ops.cast(kernels["kernel"], dtype))
        if bias is not None:
            out_rank = len(outputs.shape)
            bias_shape = self._unit_shape(out_rank, self._output_unit_axis(out_rank))
            outputs = outputs + ops.reshape(ops.cast(bias, dtype), bias_shape)
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return outputs

    def _call_rnn(self, inputs, kernels, training, mask, initial_state):
        # The cell reads `self.kernel` and `self.recurrent_kernel` at each
        # step, and Keras's fused LSTM and GRU read them from the cell: for
        # this call both see the normalized tensors, so the gradient reaches
        # `v` and `g` through them. Setting the instance attributes directly
        # keeps the layer's variable tracking as it is; the variables are put
        # back even if the call fails.
        cell = self.layer.cell
        variables = {name: self._kernel_variable(name) for name in kernels}
        for name, kernel in kernels.items():
            # In the dtype the cell computes in (its policy may differ from ours).
            object.__setattr__(cell, name, ops.cast(kernel, cell.compute_dtype))
        try:
            return self.layer(inputs, initial_state=initial_state, mask=mask, training=training)
        finally:
            for name, variable in variables.items():
                object.__setattr__(cell, name, variable)

    def remove(self):
        """Returns a plain layer that computes what the wrapper computes.

        The new layer is of the wrapped layer's class, made from its config
        and built for the same input shape. Its kernel (for a recurrent
        layer, the cell's kernels that `rnn_kernel` chooses) is the
        normalized `g * v / ||v||` and its bias the one the wrapper adds,
        both with the data-dependent initialization's offsets included; its
        other weights are copies of the wrapped layer's. The wrapper and its variables are left
        unchanged, so it can still be used and trained. Use it to serve or
        export a model without the wrapper's per-call normalization.

        Returns:
            A new, built layer of the wrapped layer's class, with the same
            config and weights holding the effective kernel and bias.

        Raises:
            ValueError: if the wrapper is not built yet.

        Example:

        >>> import numpy as np, keras, keras_gradkit
        >>> wrapper = keras_gradkit.layers.WeightNormalization(keras.layers.Dense(3))
        >>> x = np.random.rand(8, 4).astype("float32")
        >>> _ = wrapper(x, training=True)  # data init on a first batch
        >>> dense = wrapper.remove()
        >>> type(dense).__name__
        'Dense'
        >>> y_wrapped = keras.ops.convert_to_numpy(wrapper(x))
        >>> bool(np.allclose(keras.ops.convert_to_numpy(dense(x)), y_wrapped, atol=1e-5))
        True
        """
        if not self.built:
            raise ValueError(
                "WeightNormalization.remove() needs a built wrapper: call the wrapper on a "
                "batch (or call `build(input_shape)`) first. Received: an unbuilt "
                f"WeightNormalization of layer {self.layer.name!r}"
            )
        kernels, bias = self._effective_weights()
        replaced = {id(self._kernel_variable(name)): kernels[name] for name in kernels}
        if bias is not None:
            replaced[id(self._bias_variable())] = bias
        layer = self.layer
        plain = type(layer).from_config(layer.get_config())
        plain.build_from_config(layer.get_build_config() or self.get_build_config())
        for source, target in zip(layer.weights, plain.weights, strict=True):
            value = replaced.get(id(source))
            target.assign(ops.convert_to_numpy(source) if value is None else value)
        return plain

    def _effective_weights(self):
        """The kernels (by attribute name) and bias the (inference) call uses,
        offsets included, as NumPy."""
        bias = self._bias()
        kernels = {}
        for name in self._kernel_names():
            g = ops.cast(ops.convert_to_tensor(self._length(name)), "float32")
            if name == "kernel" and self._initializes:
                g = g + ops.convert_to_tensor(self.g_offset)
                if bias is not None:
                    bias = bias + ops.convert_to_tensor(self.bias_offset)
            kernels[name] = ops.convert_to_numpy(self._scaled(self._direction(name), g))
        return kernels, (None if bias is None else ops.convert_to_numpy(bias))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        return {
            **super().get_config(),
            "data_init": self.data_init,
            "rnn_kernel": self.rnn_kernel,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's Wrapper pops "layer" from the dict it is given; keep the
        # caller's config intact. Configs saved before `rnn_kernel` existed
        # normalized an RNN's input kernel: they load as they were saved.
        config = {"rnn_kernel": "input", **config}
        return super().from_config(config, custom_objects=custom_objects)


def _check_layer(layer):
    """TypeError unless `layer` is a layer WeightNormalization can wrap."""
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "Argument `layer` must be a Keras layer with a `kernel` (Dense, Conv1D/2D/3D, "
            f"their transposed forms, or an RNN layer). Received: layer={layer!r}"
        )
    if not isinstance(layer, _SUPPORTED):
        raise TypeError(
            "Argument `layer` must be a Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose or RNN "
            "layer: WeightNormalization normalizes their `kernel` (a recurrent cell's input "
            f"kernel), and {type(layer).__name__} has none. "
            f"Received: layer={layer.name!r} of type {type(layer).__name__}"
        )
    if isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, keras.layers.StackedRNNCells):
        raise TypeError(
            "Argument `layer` must be an RNN with a single cell: a StackedRNNCells has no "
            "`kernel` of its own. Wrap one `keras.layers.RNN` per cell instead. "
            f"Received: layer={layer.name!r} with cells "
            f"{[type(c).__name__ for c in layer.cell.cells]}"
        )


def _step_moments(t, mask):
    """Mean and variance per unit of `t` `(batch, time, units)` over the batch
    and the time steps, leaving out the masked steps."""
    if mask is None:
        return ops.moments(t, axes=(0, 1))
    weights = ops.expand_dims(ops.cast(mask, "float32"), -1)
    count = ops.maximum(ops.sum(weights), 1.0)
    mean = ops.sum(t * weights, axis=(0, 1)) / count
    variance = ops.sum(weights * ops.square(t - mean), axis=(0, 1)) / count
    return mean, variance
