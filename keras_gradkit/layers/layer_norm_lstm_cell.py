"""LSTM cell with layer normalization (Ba et al. 2016), as tensorflow-addons had it."""

import keras

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.layers.lstm import LSTMCell


@keras_gradkit_export
class LayerNormLSTMCell(LSTMCell):
    """LSTM cell with layer normalization of the gate pre-activations and the cell state.

    Use it in `keras.layers.RNN` where tensorflow-addons'
    `tfa.rnn.LayerNormLSTMCell` was used (tensorflow-addons does not run on
    Keras 3), or when an LSTM trains slowly because its pre-activations drift
    in scale. It computes what tensorflow-addons computed:

        z = LN_x(x_t W) + LN_h(h_{t-1} U) + b
        [i, f, g, o] = split(z, 4)
        c_t = LN_c(σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g))
        h_t = σ(o) ⊙ tanh(c_t)

    where each `LN(v) = γ ⊙ (v - mean(v)) / sqrt(var(v) + ε) + β` normalizes
    over the last axis (all `4 * units` gate pre-activations together for
    `LN_x`, `LN_h`) with its own `γ`, `β`. As in tensorflow-addons, the
    normalized `c_t` is the carried state (Ba et al. normalize `c_t` only
    inside `h_t`). The bias `b = [b_i, b_f, b_c, b_o]` starts from the gate
    arguments exactly as in `keras_gradkit.layers.LSTMCell`.
    The cell has no fused kernel: it always runs the step-by-step loop.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate and the output. Defaults to
            `"tanh"`.
        recurrent_activation: activation of the gates. Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's bias initializer, or `None` to build the bias
            from the gate arguments (see `keras_gradkit.layers.LSTMCell`).
            Defaults to `None`.
        unit_forget_bias: `None`, or Keras's flag (see
            `keras_gradkit.layers.LSTMCell`). Defaults to `None`.
        kernel_regularizer: regularizer of `kernel`. Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel`. Defaults to `None`.
        recurrent_constraint: constraint of `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, input dropout rate (one mask for all
            gates). Defaults to `0.0`.
        recurrent_dropout: float in `[0, 1)`, recurrent dropout rate (one mask
            for all gates). Defaults to `0.0`.
        seed: int or `None`, seed of the dropout and of chrono
            initialization. Defaults to `None`.
        forget_bias: float, initial forget-gate bias. Defaults to `1.0`.
        input_bias: float, initial input-gate bias. Defaults to `0.0`.
        cell_bias: float, initial candidate bias. Defaults to `0.0`.
        output_bias: float, initial output-gate bias. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization
            instead of the constant gate biases. Defaults to `None`.
        norm_gamma_initializer: initializer of the three `γ`. Defaults to
            `"ones"`.
        norm_beta_initializer: initializer of the three `β`. Defaults to
            `"zeros"`.
        norm_epsilon: float > 0, `ε` of the layer normalizations. Defaults to
            `1e-3`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: list `[h, c]`, each of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, [h, c])`, each of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.LayerNormLSTMCell(8)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.zeros((2, 5, 3))).shape)
    (2, 5, 8)

    References:
        Ba et al., [Layer Normalization](https://arxiv.org/abs/1607.06450), 2016.
        Gers et al., [Learning to Forget: Continual Prediction with LSTM](
        https://doi.org/10.1162/089976600300015015), 2000.
        Tallec & Ollivier, [Can recurrent neural networks warp time?](
        https://arxiv.org/abs/1804.11188), 2018.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer=None,
        unit_forget_bias=None,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        forget_bias=1.0,
        input_bias=0.0,
        cell_bias=0.0,
        output_bias=0.0,
        chrono_timesteps=None,
        norm_gamma_initializer="ones",
        norm_beta_initializer="zeros",
        norm_epsilon=1e-3,
        **kwargs,
    ):
        _validation.positive_float("norm_epsilon", norm_epsilon)
        kwargs.pop("implementation", None)
        super().__init__(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            forget_bias=forget_bias,
            input_bias=input_bias,
            cell_bias=cell_bias,
            output_bias=output_bias,
            chrono_timesteps=chrono_timesteps,
            **kwargs,
        )
        # One dropout mask for the whole (batch, features) input, as tensorflow-addons.
        self.implementation = 2
        self.dropout_mask_count = None
        self.norm_gamma_initializer = keras.initializers.get(norm_gamma_initializer)
        self.norm_beta_initializer = keras.initializers.get(norm_beta_initializer)
        self.norm_epsilon = float(norm_epsilon)
        self.kernel_norm = self._make_norm("kernel_norm")
        self.recurrent_norm = self._make_norm("recurrent_norm")
        self.state_norm = self._make_norm("state_norm")

    def _make_norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.norm_epsilon,
            gamma_initializer=self.norm_gamma_initializer,
            beta_initializer=self.norm_beta_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_norm.build((None, 4 * self.units))
        self.recurrent_norm.build((None, 4 * self.units))
        self.state_norm.build((None, self.units))

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        if training and 0.0 < self.dropout < 1.0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            h_tm1 = h_tm1 * self.get_recurrent_dropout_mask(h_tm1)
        z = self.kernel_norm(keras.ops.matmul(inputs, self.kernel))
        z = z + self.recurrent_norm(keras.ops.matmul(h_tm1, self.recurrent_kernel))
        if self.use_bias:
            z = z + self.bias
        z_i, z_f, z_c, z_o = keras.ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        o = self.recurrent_activation(z_o)
        c = self.state_norm(f * c_tm1 + i * self.activation(z_c))
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self):
        return {
            **super().get_config(),
            "norm_gamma_initializer": keras.initializers.serialize(self.norm_gamma_initializer),
            "norm_beta_initializer": keras.initializers.serialize(self.norm_beta_initializer),
            "norm_epsilon": self.norm_epsilon,
        }
