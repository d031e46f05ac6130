"""ResidualIndRNN: one pre-activation residual block of the deep IndRNN."""

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.layers.ind_rnn import IndRNN, ind_rnn_arguments

_BATCH_NORM_PLACES = ("before", "after", None)


def _validate_block_arguments(units, dropout, batch_norm, momentum, epsilon, use_bias):
    _validation.positive_int("units", units)
    _validation.fraction("dropout", dropout)
    _validation.one_of("batch_norm", batch_norm, _BATCH_NORM_PLACES)
    _validation.fraction("momentum", momentum)
    _validation.positive_float("epsilon", epsilon)
    _validation.bool_arg("use_bias", use_bias)


def _child_seed(seed, index):
    return None if seed is None else seed + index


def _initializer_for(initializer, index):
    """`initializer` for the `index`-th weight it fills. A Keras initializer
    seeded with an int (or unseeded, which picks an int once) draws the same
    values at every call, so two weights given one instance would start
    equal: each gets a copy, an int seed shifted by `index`. One seeded by a
    `SeedGenerator` (which draws anew at each call), or without a seed, is
    shared as it is."""
    if initializer is None:
        return None
    config = initializer.get_config()
    if "seed" not in config or not (config["seed"] is None or isinstance(config["seed"], int)):
        return initializer
    if config["seed"] is not None:
        config["seed"] += index
    return type(initializer).from_config(config)


@keras_gradkit_export
class ResidualIndRNN(keras.layers.Layer):
    """Residual IndRNN block: `y = x + F(x)` over a whole sequence.

    Stack these blocks to build the deep residual IndRNN of Li et al. (2019):
    the identity shortcut carries the gradient from the last block to the
    first unchanged, so tens of recurrent layers still train where a plain
    stack loses the gradient across depth. The block keeps the shape
    `(batch, timesteps, units)`; put a `keras.layers.Dense(units)` (or an
    `IndRNN`) in front of the first block to change the width.

    Equation (the official code's `_residualBlock_preact`, identity
    shortcut), with `R` the recurrence alone
    `R(z)_t = activation(z_t + recurrent_kernel * R(z)_{t-1})`
    (`keras_gradkit.layers.IndRNN(units, use_kernel=False, use_bias=False)`),
    `BN` batch normalization over batch and time, `D` dropout with one mask
    per sequence and `W z = z @ w + b` a per-step weight:

        batch_norm="after" (default):  F(x) = W_2 D(BN_2(R_2(W_1 D(BN_1(R_1(x))))))
        batch_norm="before":           F(x) = W_2 D(R_2(BN_2(W_1 D(R_1(BN_1(x))))))
        y = x + F(x)

    With `batch_norm=None` there is none. A block holds two `(units, units)`
    matrices (the weights), as the paper's: the input of each recurrence is
    the weight (or the block's input) before it, so the recurrences need no
    input kernel of their own. `"after"` is what the official runs use (the
    default of `pixelMNIST/opts.py`); `"before"` is the pre-activation order
    of the paper's figure. The last operation of `F` is a weight, so `F` can
    take either sign.

    Blocks saved by keras_gradkit 0.x before this layout (each recurrence a
    full `IndRNN` with its own input kernel and bias: four matrices) load as
    they were saved, and keep computing what they computed.

    Masks: batch statistics are computed over the unmasked steps only, the
    recurrence keeps its state through masked steps, `F` is zero at masked
    steps (they pass through unchanged) and the mask passes on. Padding a
    batch with more masked steps changes nothing at the real steps, in
    training and in inference.

    Args:
        units: int, width of the input, the state and the output. Must be
            >= 1 and equal the last axis of the input.
        activation: activation of both recurrences. Defaults to `"relu"`, as
            in the paper.
        use_bias: bool, whether the weights `W` add a bias (the recurrences
            have none: the weight before each adds it). Defaults to `True`.
        kernel_initializer: initializer of the weights `w`. Defaults to
            `"glorot_uniform"`; the official code's is
            `keras.initializers.VarianceScaling(2 / 65, "fan_in", "uniform")`
            (PyTorch's `kaiming_uniform_(a=8)`).
        recurrent_initializer: initializer of the recurrent kernels, as in
            `keras_gradkit.layers.IndRNN`. Defaults to `None` (uniform in
            `[0, bound]`).
        bias_initializer: initializer of the biases of the weights. Defaults
            to `"zeros"`.
        recurrent_max_abs: positive float or None, the bound on
            `|recurrent_kernel|`. Defaults to `None`.
        timesteps: positive int or None; without `recurrent_max_abs` it sets
            the bound to `2 ** (1 / timesteps)`. Defaults to `None`.
        kernel_regularizer: regularizer of the weights `w` (the official code
            decays them by 1e-4). Defaults to `None`.
        recurrent_regularizer: regularizer of the recurrent kernels.
            Defaults to `None` (the paper applies no weight decay to them).
        bias_regularizer: regularizer of the biases. Defaults to `None`.
        kernel_constraint: constraint of the weights `w`. Defaults to `None`.
        bias_constraint: constraint of the biases. Defaults to `None`.
        dropout: float in `[0, 1)`, fraction of each recurrence's outputs
            dropped before its weight, with one mask shared by all time steps
            of a sequence. Defaults to `0.0`.
        seed: int or None, seed of the dropout masks and of the default
            recurrent initializers. Defaults to `None`.
        batch_norm: `"after"`, `"before"` or None: where batch normalization
            sits relative to each recurrence. Defaults to `"after"`, as the
            official runs.
        momentum: float, momentum of the moving statistics of batch
            normalization. With few training steps, lower it (e.g. `0.9`):
            after 200 steps at `0.99` the moving variance still weighs its
            initial value by 0.13, and inference drifts from training.
            PyTorch's `momentum=0.1`, the official code's, is Keras's `0.9`.
            Defaults to `0.99`.
        epsilon: positive float added to the variance in batch
            normalization (the official code's is PyTorch's `1e-5`).
            Defaults to `1e-3`.
        grad_clipping: positive float or None, the recurrences'
            `grad_clipping` (see `keras_gradkit.layers.IndRNNCell`).
            Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, timesteps, units)`.
        mask: optional boolean `(batch, timesteps)`, `True` at real steps.
        training: bool, whether batch statistics and dropout are used.

    Returns:
        `(batch, timesteps, units)`, the input plus the residual `F(x)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> inputs = keras.Input((16, 1))
    >>> x = keras.layers.Dense(8)(inputs)
    >>> for _ in range(2):
    ...     x = keras_gradkit.layers.ResidualIndRNN(8, timesteps=16)(x)
    >>> model = keras.Model(inputs, x)
    >>> tuple(model(np.ones((2, 16, 1), "float32")).shape)
    (2, 16, 8)

    References:
        Li et al., [Deep Independently Recurrent Neural Network
        (IndRNN)](https://arxiv.org/abs/1910.06251), 2019.
    """

    def __init__(
        self,
        units,
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer=None,
        bias_initializer="zeros",
        recurrent_max_abs=None,
        timesteps=None,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        batch_norm="after",
        momentum=0.99,
        epsilon=1e-3,
        grad_clipping=None,
        **kwargs,
    ):
        _validate_block_arguments(units, dropout, batch_norm, momentum, epsilon, use_bias)
        _validation.positive_float("grad_clipping", grad_clipping, allow_none=True)
        # Blocks saved before the official layout have no such key in their
        # config (`from_config`): each of their recurrences has an input kernel.
        self._input_kernels = bool(kwargs.pop("_input_kernels", False))
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = (
            None if recurrent_initializer is None else keras.initializers.get(recurrent_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.recurrent_max_abs = recurrent_max_abs
        self.timesteps = timesteps
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.seed = seed
        self.batch_norm = batch_norm
        self.momentum = momentum
        self.epsilon = epsilon
        self.grad_clipping = None if grad_clipping is None else float(grad_clipping)
        self.supports_masking = True
        self.batch_norms = []
        if batch_norm is not None:
            self.batch_norms = [
                keras.layers.BatchNormalization(
                    momentum=momentum,
                    epsilon=epsilon,
                    dtype=self.dtype_policy,
                    name=f"batch_normalization_{i}",
                )
                for i in (1, 2)
            ]
        self.recurrences = [self._make_recurrence(i) for i in (1, 2)]
        self.weight_layers = [self._make_weight(i) for i in (1, 2)]
        self.dropouts = [
            keras.layers.Dropout(
                self.dropout,
                noise_shape=(None, 1, units),
                seed=_child_seed(seed, i),
                dtype=self.dtype_policy,
                name=f"dropout_{i}",
            )
            for i in (1, 2)
        ]

    def _projection_arguments(self, index):
        """The kernel and bias arguments of the `index`-th weight (1, 2; 3, 4
        for the four-matrix block's recurrences)."""
        return dict(
            use_bias=self.use_bias,
            kernel_initializer=_initializer_for(self.kernel_initializer, index),
            bias_initializer=_initializer_for(self.bias_initializer, index),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
        )

    def _make_recurrence(self, index):
        if self._input_kernels:
            projection = self._projection_arguments(index + 2)
        else:
            projection = dict(use_kernel=False, use_bias=False)
        return IndRNN(
            self.units,
            activation=self.activation,
            recurrent_initializer=_initializer_for(self.recurrent_initializer, index),
            recurrent_max_abs=self.recurrent_max_abs,
            timesteps=self.timesteps,
            recurrent_regularizer=self.recurrent_regularizer,
            seed=_child_seed(self.seed, index),
            return_sequences=True,
            grad_clipping=self.grad_clipping,
            dtype=self.dtype_policy,
            name=f"ind_rnn_{index}",
            **projection,
        )

    def _make_weight(self, index):
        return keras.layers.Dense(
            self.units,
            dtype=self.dtype_policy,
            name=f"weight_{index}",
            **self._projection_arguments(index),
        )

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "ResidualIndRNN expects inputs of rank 3 (batch, timesteps, units). "
                f"Received: input shape={tuple(input_shape)}"
            )
        if input_shape[-1] != self.units:
            raise ValueError(
                "ResidualIndRNN adds its input to its output, so the input width "
                f"must equal `units`. Received: input width={input_shape[-1]} "
                f"(input shape={tuple(input_shape)}), units={self.units}. Put a "
                f"`keras.layers.Dense({self.units})` in front of the block."
            )
        input_shape = tuple(input_shape)
        for i in range(2):
            if self.batch_norms:
                self.batch_norms[i].build(input_shape)
            self.recurrences[i].build(input_shape)
            self.weight_layers[i].build(input_shape)

    def call(self, inputs, training=None, mask=None):
        residual = inputs
        for i in range(2):
            residual = self._half(i, residual, training, mask)
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
            residual = ops.where(keep, residual, ops.zeros_like(residual))
        return inputs + residual

    def _half(self, i, x, training, mask):
        """`W D(BN(R(x)))`, or `W D(R(BN(x)))` with `batch_norm="before"`."""
        if self.batch_norm == "before":
            x = self.batch_norms[i](x, training=training, mask=mask)
        x = self.recurrences[i](x, training=training, mask=mask)
        if self.batch_norm == "after":
            x = self.batch_norms[i](x, training=training, mask=mask)
        x = self.dropouts[i](x, training=training)
        return self.weight_layers[i](x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = {
            **ind_rnn_arguments(self),
            "batch_norm": self.batch_norm,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "grad_clipping": self.grad_clipping,
            "_input_kernels": self._input_kernels,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        # A config without `_input_kernels` was saved by the four-matrix block.
        return cls(**{"_input_kernels": True, **config})
