"""GRU cell and layer with per-gate bias arguments and chrono initialization."""

import keras

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.layers import _gated


def _gates(update_bias, reset_bias, candidate_bias):
    return {"update_bias": update_bias, "reset_bias": reset_bias, "candidate_bias": candidate_bias}


@keras_gradkit_export
class GRUCell(keras.layers.GRUCell):
    """`keras.layers.GRUCell` with a bias argument for each gate and chrono initialization.

    Use it in `keras.layers.RNN` (or `keras_gradkit.layers.GRU` for the whole
    sequence) to choose how long the GRU keeps its state at the start of
    training. The computation is Keras's (`reset_after=True` shown):

        z = σ(x W_z + b_z + h_{t-1} U_z + b'_z)
        r = σ(x W_r + b_r + h_{t-1} U_r + b'_r)
        ĥ = tanh(x W_h + b_h + r ⊙ (h_{t-1} U_h + b'_h))
        h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ

    so a large update bias `b_z` keeps the state. With `reset_after=False`,
    `ĥ = tanh(x W_h + b_h + (r ⊙ h_{t-1}) U_h)` and there is no `b'`. The
    input biases start at `update_bias`, `reset_bias`, `candidate_bias` and
    the recurrent ones `b'` at 0; with `chrono_timesteps=T`,
    `b_z ~ log(U[1, T - 1])`, the others 0 (Tallec & Ollivier 2018).

    The cell is Keras's, built by Keras's constructor and `build`: the gate
    arguments become the initializer of the whole bias (a
    `keras_gradkit.initializers.GateBias` or `Chrono`), handed to Keras's
    constructor. The attribute `bias_initializer` therefore holds what Keras's
    `build` uses, and `get_config` returns the arguments as given.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate. Defaults to `"tanh"`.
        recurrent_activation: activation of the gates. Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's bias initializer, or `None` to build the bias
            from the gate arguments. When given, the gate arguments must stay
            at their defaults. Defaults to `None`.
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
        reset_after: bool, apply the reset gate after the recurrent matrix
            multiplication (`True`, cuDNN compatible, bias `(2, 3 * units)`) or
            before (`False`, bias `(3 * units,)`). Defaults to `True`.
        seed: int or `None`, seed of the dropout and of chrono
            initialization. Defaults to `None`.
        update_bias: float, initial update-gate bias `b_z`. Defaults to `0.0`.
        reset_bias: float, initial reset-gate bias `b_r`. Defaults to `0.0`.
        candidate_bias: float, initial candidate bias `b_h`. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization with
            `T_max = chrono_timesteps` instead of the constant gate biases,
            which must then stay at their defaults. Defaults to `None`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: tensor (or list of one tensor) of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, new_state)` with `h` of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.GRUCell(8, update_bias=1.0)
    >>> rnn = keras.layers.RNN(cell)
    >>> tuple(rnn(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Cho et al., [Learning Phrase Representations using RNN Encoder-Decoder
        for Statistical Machine Translation](https://arxiv.org/abs/1406.1078), 2014.
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
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        reset_after=True,
        seed=None,
        update_bias=0.0,
        reset_bias=0.0,
        candidate_bias=0.0,
        chrono_timesteps=None,
        **kwargs,
    ):
        _gated.check_cell_arguments(units, use_bias, dropout, recurrent_dropout)
        _validation.bool_arg("reset_after", reset_after)
        gates = _gates(update_bias, reset_bias, candidate_bias)
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
            reset_after=reset_after,
            seed=seed,
            **_gated.keras_bias_arguments(
                "gru", gates, chrono_timesteps, bias_initializer, reset_after=reset_after, seed=seed
            ),
            **kwargs,
        )
        _gated.keep_bias_arguments(self, gates, chrono_timesteps, bias_initializer)

    def build(self, input_shape):
        _gated.check_input_dim(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), **_gated.bias_config(self, "gru")}


@keras_gradkit_export
class GRU(keras.layers.GRU):
    """`keras.layers.GRU` with a bias argument for each gate and chrono initialization.

    A drop-in replacement for `keras.layers.GRU` (same arguments, same
    positions, a subclass of it) that sets the initial gate biases: a positive
    `update_bias` makes the GRU keep its state from the first step, and
    `chrono_timesteps` spreads the memory times up to a given length.
    Everything else is Keras's layer, including the fused kernels: on a GPU
    with the TensorFlow backend the cuDNN kernel is chosen under the same
    conditions as for `keras.layers.GRU` (also `reset_after=True`). For each
    step (`reset_after=True`):

        z = σ(x W_z + h_{t-1} U_z + b_z + b'_z),  r = σ(x W_r + h_{t-1} U_r + b_r + b'_r)
        ĥ = tanh(x W_h + b_h + r ⊙ (h_{t-1} U_h + b'_h)),  h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ

    with the input biases starting at `update_bias`, `reset_bias`,
    `candidate_bias` and `b'` at 0, or, with `chrono_timesteps=T`,
    `b_z ~ log(U[1, T - 1])` and the others 0.

    Keras's constructor builds the layer's cell, a `keras.layers.GRUCell`,
    from the computed bias initializer (a `keras_gradkit.initializers.GateBias`
    or `Chrono`); as in `keras_gradkit.layers.GRUCell`, the attribute
    `bias_initializer` holds what Keras's `build` uses and `get_config`
    returns the arguments as given.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate. Defaults to `"tanh"`.
        recurrent_activation: activation of the gates. Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's bias initializer, or `None` to build the bias
            from the gate arguments. When given, the gate arguments must stay
            at their defaults. Defaults to `None`.
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
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards. Defaults to
            `False`.
        stateful: bool, carry the last state over to the next batch.
            Defaults to `False`.
        unroll: bool, unroll the loop. Defaults to `False`.
        reset_after: bool, GRU convention, see `keras_gradkit.layers.GRUCell`.
            Defaults to `True`.
        use_cudnn: `"auto"`, `True` or `False`, whether to use cuDNN. Defaults
            to `"auto"`.
        update_bias: float, initial update-gate bias. Defaults to `0.0`.
        reset_bias: float, initial reset-gate bias. Defaults to `0.0`.
        candidate_bias: float, initial candidate bias. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization with
            `T_max = chrono_timesteps` instead of the constant gate biases.
            Defaults to `None`.

    Call arguments:
        inputs: tensor of shape `(batch, timesteps, features)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`.
        training: bool, whether dropout applies.
        initial_state: optional tensor of shape `(batch, units)`.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; followed by the final state with
        `return_state=True`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> gru = keras_gradkit.layers.GRU(8, chrono_timesteps=100)
    >>> tuple(gru(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Cho et al., [Learning Phrase Representations using RNN Encoder-Decoder
        for Statistical Machine Translation](https://arxiv.org/abs/1406.1078), 2014.
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
        reset_after=True,
        use_cudnn="auto",
        update_bias=0.0,
        reset_bias=0.0,
        candidate_bias=0.0,
        chrono_timesteps=None,
        **kwargs,
    ):
        _gated.check_use_cudnn(use_cudnn)
        _gated.check_cell_arguments(units, use_bias, dropout, recurrent_dropout)
        _validation.bool_arg("reset_after", reset_after)
        gates = _gates(update_bias, reset_bias, candidate_bias)
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
            reset_after=reset_after,
            use_cudnn=use_cudnn,
            **_gated.keras_bias_arguments(
                "gru", gates, chrono_timesteps, bias_initializer, reset_after=reset_after, seed=seed
            ),
            **kwargs,
        )
        _gated.keep_bias_arguments(self, gates, chrono_timesteps, bias_initializer)

    def get_config(self):
        return {
            **super().get_config(),
            "use_cudnn": self.use_cudnn,
            **_gated.bias_config(self, "gru"),
        }
