"""LSTM cell and layer with per-gate bias arguments and chrono initialization."""

import keras

from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.layers import _gated


def _gates(forget_bias, input_bias, cell_bias, output_bias):
    return {
        "forget_bias": forget_bias,
        "input_bias": input_bias,
        "cell_bias": cell_bias,
        "output_bias": output_bias,
    }


@keras_gradkit_export
class LSTMCell(keras.layers.LSTMCell):
    """`keras.layers.LSTMCell` with a bias argument for each gate and chrono initialization.

    Use it in `keras.layers.RNN` (or write `keras_gradkit.layers.LSTM` for the
    whole sequence) when the start of training decides whether a long
    dependency is learned: the forget-gate bias sets how long the cell
    remembers before it has learned anything. The computation is Keras's:

        i = σ(x W_i + h_{t-1} U_i + b_i)    f = σ(x W_f + h_{t-1} U_f + b_f)
        g = tanh(x W_c + h_{t-1} U_c + b_c) o = σ(x W_o + h_{t-1} U_o + b_o)
        c_t = f ⊙ c_{t-1} + i ⊙ g           h_t = o ⊙ tanh(c_t)

    Only the initial value of `b = [b_i, b_f, b_c, b_o]` changes. By default
    `b_f = 1`, the others 0 (Gers et al. 2000; Jozefowicz et al. 2015), the
    same bias as Keras's default `unit_forget_bias=True`. With
    `chrono_timesteps=T`, `b_f ~ log(U[1, T - 1])` and `b_i = -b_f` (Tallec &
    Ollivier 2018).

    The cell is Keras's, built by Keras's constructor and `build`: the gate
    arguments become the initializer of the whole bias (a
    `keras_gradkit.initializers.GateBias` or `Chrono`), handed to Keras's
    constructor with `unit_forget_bias=False`. The attributes
    `bias_initializer` and `unit_forget_bias` therefore hold what Keras's
    `build` uses, and `get_config` returns the arguments as given.

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
            from the gate arguments. When given, the gate arguments must stay
            at their defaults, and the bias is what Keras would build (with
            `unit_forget_bias`, which Keras defaults to `True`). Defaults to
            `None`.
        unit_forget_bias: `None`, or Keras's flag: `True` sets the forget slice
            to 1 and fills the rest with `bias_initializer` (zeros if `None`),
            `False` uses `bias_initializer` everywhere. When not `None`, the
            gate arguments must stay at their defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel`. Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel`. Defaults to `None`.
        recurrent_constraint: constraint of `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, input dropout rate. Defaults to `0.0`.
        recurrent_dropout: float in `[0, 1)`, recurrent dropout rate. Defaults
            to `0.0`.
        seed: int or `None`, seed of the dropout and of chrono
            initialization. Defaults to `None`.
        forget_bias: float, initial forget-gate bias `b_f`. Defaults to `1.0`.
        input_bias: float, initial input-gate bias `b_i`. Defaults to `0.0`.
        cell_bias: float, initial candidate bias `b_c`. Defaults to `0.0`.
        output_bias: float, initial output-gate bias `b_o`. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`. When set, chrono
            initialization with `T_max = chrono_timesteps` replaces the
            constant gate biases, which must then stay at their defaults.
            Defaults to `None`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: list `[h, c]`, each of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, [h, c])`, each of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.LSTMCell(8, forget_bias=2.0)
    >>> rnn = keras.layers.RNN(cell)
    >>> tuple(rnn(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Gers et al., [Learning to Forget: Continual Prediction with LSTM](
        https://doi.org/10.1162/089976600300015015), 2000.
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
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
        **kwargs,
    ):
        _gated.check_cell_arguments(units, use_bias, dropout, recurrent_dropout)
        gates = _gates(forget_bias, input_bias, cell_bias, output_bias)
        super().__init__(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            **_gated.keras_bias_arguments(
                "lstm", gates, chrono_timesteps, bias_initializer, unit_forget_bias, seed=seed
            ),
            **kwargs,
        )
        _gated.keep_bias_arguments(
            self, gates, chrono_timesteps, bias_initializer, unit_forget_bias
        )

    def build(self, input_shape):
        _gated.check_input_dim(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **_gated.bias_config(self, "lstm")}


@keras_gradkit_export
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with a bias argument for each gate and chrono initialization.

    A drop-in replacement for `keras.layers.LSTM` (same arguments, same
    positions, a subclass of it) for long dependencies: set the initial
    forget-gate bias (`forget_bias`, default 1), any other gate's, or use
    chrono initialization (`chrono_timesteps`). Everything else is Keras's
    layer, including the fused kernels: on a GPU with the TensorFlow backend
    the cuDNN kernel is chosen under the same conditions as for
    `keras.layers.LSTM` (tanh, sigmoid, `recurrent_dropout=0`, `unroll=False`,
    `use_bias=True`). For each step:

        [i, f, g, o] = [σ, σ, tanh, σ](x_t W + h_{t-1} U + b)
        c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

    with `b_f = forget_bias`, `b_i = input_bias`, `b_c = cell_bias`,
    `b_o = output_bias` at initialization, or, with `chrono_timesteps=T`,
    `b_f ~ log(U[1, T - 1])`, `b_i = -b_f`, `b_c = b_o = 0`.

    Keras's constructor builds the layer's cell, a `keras.layers.LSTMCell`,
    from the computed bias initializer (a `keras_gradkit.initializers.GateBias`
    or `Chrono`, with `unit_forget_bias=False`); as in
    `keras_gradkit.layers.LSTMCell`, the attributes `bias_initializer` and
    `unit_forget_bias` hold what Keras's `build` uses and `get_config` returns
    the arguments as given.

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
            from the gate arguments. When given, the gate arguments must stay
            at their defaults and the bias is Keras's (with `unit_forget_bias`
            defaulting to `True` as in Keras). Defaults to `None`.
        unit_forget_bias: `None`, or Keras's flag (`True`: forget slice 1, the
            rest from `bias_initializer`; `False`: `bias_initializer`
            everywhere). When not `None`, the gate arguments must stay at their
            defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel`. Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        kernel_constraint: constraint of `kernel`. Defaults to `None`.
        recurrent_constraint: constraint of `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, input dropout rate. Defaults to `0.0`.
        recurrent_dropout: float in `[0, 1)`, recurrent dropout rate. Defaults
            to `0.0`.
        seed: int or `None`, seed of the dropout and of chrono
            initialization. Defaults to `None`.
        return_sequences: bool, return the whole sequence. Defaults to `False`.
        return_state: bool, also return the last `h` and `c`. Defaults to
            `False`.
        go_backwards: bool, process the sequence backwards. Defaults to
            `False`.
        stateful: bool, carry the last state over to the next batch.
            Defaults to `False`.
        unroll: bool, unroll the loop. Defaults to `False`.
        use_cudnn: `"auto"`, `True` or `False`, whether to use cuDNN. Use
            `False` for a SavedModel traced on a GPU that must run on a CPU.
            Defaults to `"auto"`.
        forget_bias: float, initial forget-gate bias. Defaults to `1.0`.
        input_bias: float, initial input-gate bias. Defaults to `0.0`.
        cell_bias: float, initial candidate bias. Defaults to `0.0`.
        output_bias: float, initial output-gate bias. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization with
            `T_max = chrono_timesteps` instead of the constant gate biases.
            Defaults to `None`.

    Call arguments:
        inputs: tensor of shape `(batch, timesteps, features)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`.
        training: bool, whether dropout applies.
        initial_state: optional list `[h, c]`, each `(batch, units)`.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; followed by the final `h` and `c` with
        `return_state=True`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> lstm = keras_gradkit.layers.LSTM(8, chrono_timesteps=100)
    >>> tuple(lstm(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Gers et al., [Learning to Forget: Continual Prediction with LSTM](
        https://doi.org/10.1162/089976600300015015), 2000.
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
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
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        forget_bias=1.0,
        input_bias=0.0,
        cell_bias=0.0,
        output_bias=0.0,
        chrono_timesteps=None,
        **kwargs,
    ):
        _gated.check_use_cudnn(use_cudnn)
        _gated.check_cell_arguments(units, use_bias, dropout, recurrent_dropout)
        gates = _gates(forget_bias, input_bias, cell_bias, output_bias)
        super().__init__(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            use_cudnn=use_cudnn,
            **_gated.keras_bias_arguments(
                "lstm", gates, chrono_timesteps, bias_initializer, unit_forget_bias, seed=seed
            ),
            **kwargs,
        )
        _gated.keep_bias_arguments(
            self, gates, chrono_timesteps, bias_initializer, unit_forget_bias
        )

    def get_config(self):
        return {
            **super().get_config(),
            "use_cudnn": self.use_cudnn,
            **_gated.bias_config(self, "lstm"),
        }
