"""MUT1, MUT2, MUT3: the GRU-like cells found by Jozefowicz et al.'s architecture search."""

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit import initializers as gk_initializers
from keras_gradkit.api_export import keras_gradkit_export

# The mark `keras.layers.RNN` looks for to create a cell's dropout masks
# before its loop and forget them after the call (see `backend/keras_private.py`).
from keras_gradkit.backend.keras_private import DropoutRNNCell
from keras_gradkit.layers import _gated

_GATE_DEFAULTS = _gated.GATE_DEFAULTS["gru"]


def _check_bias_arguments(use_bias, gates, chrono_timesteps, bias_initializer):
    """The package's gate-bias checks, and one more: without a bias there is
    nothing for a gate argument to set, so giving one is a mistake."""
    _gated._check_gate_arguments(gates, _GATE_DEFAULTS, chrono_timesteps, None, bias_initializer)
    if use_bias:
        return
    given = [f"{name}={value!r}" for name, value in gates.items() if value != _GATE_DEFAULTS[name]]
    if chrono_timesteps is not None:
        given.append(f"chrono_timesteps={chrono_timesteps!r}")
    if given:
        raise ValueError(
            f"Argument `use_bias` is False, so the cell has no bias for the gate arguments to "
            f"set. Received: use_bias=False, {', '.join(given)}. Drop the gate arguments, or "
            "set `use_bias=True`."
        )


def _write_gate_chrono(max_timesteps, seed):
    """Chrono initialization for a cell whose update gate `z` writes the
    candidate and `1 - z` keeps the state: `b_z = -log(U[1, T - 1])`, the
    negative of the GRU's (`keras_gradkit.initializers.Chrono`), `b_r = b_h = 0`."""
    chrono = gk_initializers.Chrono(max_timesteps, layout="gru", reset_after=False, seed=seed)

    def initializer(shape, dtype=None):
        b_z, b_r, b_h = ops.split(chrono(shape, dtype), 3)
        return ops.concatenate([ops.negative(b_z), b_r, b_h])

    return initializer


def _serialize_or_none(serialize, value):
    return None if value is None else serialize(value)


class _MUTCell(keras.layers.Layer, DropoutRNNCell):
    """What the three cells share: arguments, weights, dropout, the update.

    A subclass sets how many `units`-wide blocks its `kernel` and
    `recurrent_kernel` hold, whether the equation has a bare `x_t` term, and
    `_gates(x, h)`, which returns `z`, `r` and the input part of the
    candidate's pre-activation; the last block of `recurrent_kernel` is
    `W_hh` in every cell.
    """

    _kernel_blocks = None
    _recurrent_blocks = None
    _bare_input = False

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
        seed=None,
        update_bias=0.0,
        reset_bias=0.0,
        candidate_bias=0.0,
        chrono_timesteps=None,
        **kwargs,
    ):
        _gated.check_cell_arguments(units, use_bias, dropout, recurrent_dropout)
        _validation.integer("seed", seed, allow_none=True)
        gates = {
            "update_bias": update_bias,
            "reset_bias": reset_bias,
            "candidate_bias": candidate_bias,
        }
        _check_bias_arguments(use_bias, gates, chrono_timesteps, bias_initializer)
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = (
            None if bias_initializer is None else keras.initializers.get(bias_initializer)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        for name, value in gates.items():
            setattr(self, name, float(value))
        self.chrono_timesteps = chrono_timesteps
        self.state_size = units
        self.output_size = units

    def _resolved_bias_initializer(self):
        """The initializer of the `(3 * units,)` bias `[b_z, b_r, b_h]`."""
        if self.bias_initializer is not None:
            return self.bias_initializer
        if self.chrono_timesteps is not None:
            return _write_gate_chrono(self.chrono_timesteps, self.seed)
        return gk_initializers.GateBias(
            "gru",
            reset_after=False,
            update=self.update_bias,
            reset=self.reset_bias,
            candidate=self.candidate_bias,
        )

    def build(self, input_shape):
        _gated.check_input_dim(input_shape)
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(input_dim, self._kernel_blocks * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self._recurrent_blocks * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(3 * self.units,),
                name="bias",
                initializer=self._resolved_bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.input_projection = None
        if self._bare_input and input_dim != self.units:
            self.input_projection = self.add_weight(
                shape=(input_dim, self.units),
                name="input_projection",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

    def _biases(self):
        """`(b_z, b_r, b_h)`, zeros without a bias."""
        if self.bias is None:
            return 0.0, 0.0, 0.0
        return ops.split(self.bias, 3)

    def _input_terms(self, x):
        """`x_t` times each block of `kernel`, in the kernel's order."""
        return ops.split(ops.matmul(x, self.kernel), self._kernel_blocks, axis=-1)

    def _recurrent_block(self, h, index):
        u = self.units
        return ops.matmul(h, self.recurrent_kernel[:, index * u : (index + 1) * u])

    def _bare(self, x):
        """The paper's bare `x_t`, or `x_t P` when the input width is not `units`."""
        return x if self.input_projection is None else ops.matmul(x, self.input_projection)

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_tm1 = states[0] if nested else states
        x, h = inputs, h_tm1
        if training and self.dropout > 0:
            x = x * self.get_dropout_mask(inputs)
        # Recurrent dropout acts on the matrix products only: the state that
        # `1 - z` carries over is kept whole, as in Keras's GRUCell.
        if training and self.recurrent_dropout > 0:
            h = h * self.get_recurrent_dropout_mask(h_tm1)
        z, r, candidate_input = self._gates(x, h)
        candidate = self.activation(
            self._recurrent_block(r * h, self._recurrent_blocks - 1) + candidate_input
        )
        h_t = candidate * z + h_tm1 * (1.0 - z)
        return h_t, ([h_t] if nested else h_t)

    def get_config(self):
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": _serialize_or_none(
                keras.initializers.serialize, self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "update_bias": self.update_bias,
            "reset_bias": self.reset_bias,
            "candidate_bias": self.candidate_bias,
            "chrono_timesteps": self.chrono_timesteps,
        }
        return {**super().get_config(), **config}


@keras_gradkit_export
class MUT1Cell(_MUTCell):
    """MUT1, a GRU-like cell found by an evolutionary search over architectures.

    Use it in `keras.layers.RNN` (or `keras_gradkit.layers.MUT1` for a whole
    sequence) as an alternative to a GRU. MUT1, MUT2 and MUT3 are the best of
    the thousands of architectures Jozefowicz et al. evaluated; on some of
    their tasks they beat the LSTM and the GRU, on others not. In MUT1 the
    update gate `z` reads the input only. With `h_t` the previous state and
    `h_{t+1}` the new one (the paper's notation):

        z = σ(W_xz x_t + b_z)
        r = σ(W_xr x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + tanh(x_t) + b_h) ⊙ z + h_t ⊙ (1 - z)

    `σ` is `recurrent_activation` and the outer `tanh` is `activation`; the
    inner `tanh(x_t)` is part of the architecture and stays `tanh`. In Keras's
    row-vector convention `W x_t` is `x_t @ W`: `kernel` is
    `[W_xz | W_xr]` of shape `(input_dim, 2 * units)`, `recurrent_kernel` is
    `[W_hr | W_hh]` of shape `(units, 2 * units)` and `bias` is
    `[b_z | b_r | b_h]` of shape `(3 * units,)`.

    The one deviation from the paper: the bare `tanh(x_t)` needs the input
    width to equal `units`. When it differs, the cell learns a projection
    `input_projection` `P` of shape `(input_dim, units)`, without bias, and
    uses `tanh(x_t P)` in its place (`P` takes the `kernel_*` initializer,
    regularizer and constraint). With an input of width `units` there is no
    `P` and the cell is the paper's.

    `z` is the share of the candidate that is written and `1 - z` the share
    of the state that is kept, the opposite of Keras's GRU: a *negative*
    `update_bias` makes the cell remember longer, and `chrono_timesteps=T`
    sets `b_z = -log(U[1, T - 1])` (the GRU's chrono bias, negated) and
    `b_r = b_h = 0`. Dropout, as in Keras's cells, draws one mask per
    sequence: `dropout` on `x_t` wherever it appears, `recurrent_dropout` on
    `h_t` inside the matrix products; the `h_t ⊙ (1 - z)` carried over is
    not dropped.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate (the paper's outer `tanh`).
            Defaults to `"tanh"`.
        recurrent_activation: activation of the gates (the paper's `σ`).
            Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel` (and of
            `input_projection`). Defaults to `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's initializer of the `(3 * units,)` bias, or
            `None` to build it from the gate arguments. When given, the gate
            arguments must stay at their defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel` (and of
            `input_projection`). Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel` (and of
            `input_projection`). Defaults to `None`.
        recurrent_constraint: constraint of `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, input dropout rate. Defaults to `0.0`.
        recurrent_dropout: float in `[0, 1)`, recurrent dropout rate. Defaults
            to `0.0`.
        seed: int or `None`, seed of the dropout masks and of chrono
            initialization. Defaults to `None`.
        update_bias: float, initial update-gate bias `b_z`; negative values
            keep the state longer. Defaults to `0.0`.
        reset_bias: float, initial reset-gate bias `b_r`. Defaults to `0.0`.
        candidate_bias: float, initial candidate bias `b_h`. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization,
            `b_z = -log(U[1, chrono_timesteps - 1])`, instead of the constant
            gate biases, which must then stay at their defaults. Defaults to
            `None`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: tensor (or list of one tensor) of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, new_state)` with `h` of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.MUT1Cell(8, update_bias=-1.0)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.zeros((2, 5, 3))).shape)
    (2, 5, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
        Tallec & Ollivier, [Can recurrent neural networks warp time?](
        https://arxiv.org/abs/1804.11188), 2018.
    """

    _kernel_blocks = 2  # W_xz, W_xr
    _recurrent_blocks = 2  # W_hr, W_hh
    _bare_input = True

    def _gates(self, x, h):
        b_z, b_r, b_h = self._biases()
        x_z, x_r = self._input_terms(x)
        z = self.recurrent_activation(x_z + b_z)
        r = self.recurrent_activation(x_r + self._recurrent_block(h, 0) + b_r)
        return z, r, ops.tanh(self._bare(x)) + b_h


@keras_gradkit_export
class MUT2Cell(_MUTCell):
    """MUT2, a GRU-like cell found by an evolutionary search over architectures.

    Use it in `keras.layers.RNN` (or `keras_gradkit.layers.MUT2` for a whole
    sequence) as an alternative to a GRU. MUT1, MUT2 and MUT3 are the best of
    the thousands of architectures Jozefowicz et al. evaluated; on some of
    their tasks they beat the LSTM and the GRU, on others not. In MUT2 the
    input enters the reset gate `r` unweighted. With `h_t` the previous state
    and `h_{t+1}` the new one (the paper's notation):

        z = σ(W_xz x_t + W_hz h_t + b_z)
        r = σ(x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 - z)

    `σ` is `recurrent_activation` and the outer `tanh` is `activation`. In
    Keras's row-vector convention `W x_t` is `x_t @ W`: `kernel` is
    `[W_xz | W_xh]` of shape `(input_dim, 2 * units)`, `recurrent_kernel` is
    `[W_hz | W_hr | W_hh]` of shape `(units, 3 * units)` and `bias` is
    `[b_z | b_r | b_h]` of shape `(3 * units,)`.

    The one deviation from the paper: the bare `x_t` in `r` needs the input
    width to equal `units`. When it differs, the cell learns a projection
    `input_projection` `P` of shape `(input_dim, units)`, without bias, and
    uses `x_t P` in its place (`P` takes the `kernel_*` initializer,
    regularizer and constraint). With an input of width `units` there is no
    `P` and the cell is the paper's.

    `z` is the share of the candidate that is written and `1 - z` the share
    of the state that is kept, the opposite of Keras's GRU: a *negative*
    `update_bias` makes the cell remember longer, and `chrono_timesteps=T`
    sets `b_z = -log(U[1, T - 1])` (the GRU's chrono bias, negated) and
    `b_r = b_h = 0`. Dropout, as in Keras's cells, draws one mask per
    sequence: `dropout` on `x_t` wherever it appears, `recurrent_dropout` on
    `h_t` inside the matrix products; the `h_t ⊙ (1 - z)` carried over is
    not dropped.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate (the paper's outer `tanh`).
            Defaults to `"tanh"`.
        recurrent_activation: activation of the gates (the paper's `σ`).
            Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel` (and of
            `input_projection`). Defaults to `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's initializer of the `(3 * units,)` bias, or
            `None` to build it from the gate arguments. When given, the gate
            arguments must stay at their defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel` (and of
            `input_projection`). Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel` (and of
            `input_projection`). Defaults to `None`.
        recurrent_constraint: constraint of `recurrent_kernel`. Defaults to
            `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, input dropout rate. Defaults to `0.0`.
        recurrent_dropout: float in `[0, 1)`, recurrent dropout rate. Defaults
            to `0.0`.
        seed: int or `None`, seed of the dropout masks and of chrono
            initialization. Defaults to `None`.
        update_bias: float, initial update-gate bias `b_z`; negative values
            keep the state longer. Defaults to `0.0`.
        reset_bias: float, initial reset-gate bias `b_r`. Defaults to `0.0`.
        candidate_bias: float, initial candidate bias `b_h`. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization,
            `b_z = -log(U[1, chrono_timesteps - 1])`, instead of the constant
            gate biases, which must then stay at their defaults. Defaults to
            `None`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: tensor (or list of one tensor) of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, new_state)` with `h` of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.MUT2Cell(8, chrono_timesteps=50)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.zeros((2, 5, 8))).shape)
    (2, 5, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
        Tallec & Ollivier, [Can recurrent neural networks warp time?](
        https://arxiv.org/abs/1804.11188), 2018.
    """

    _kernel_blocks = 2  # W_xz, W_xh
    _recurrent_blocks = 3  # W_hz, W_hr, W_hh
    _bare_input = True

    def _gates(self, x, h):
        b_z, b_r, b_h = self._biases()
        x_z, x_h = self._input_terms(x)
        z = self.recurrent_activation(x_z + self._recurrent_block(h, 0) + b_z)
        r = self.recurrent_activation(self._bare(x) + self._recurrent_block(h, 1) + b_r)
        return z, r, x_h + b_h


@keras_gradkit_export
class MUT3Cell(_MUTCell):
    """MUT3, a GRU-like cell found by an evolutionary search over architectures.

    Use it in `keras.layers.RNN` (or `keras_gradkit.layers.MUT3` for a whole
    sequence) as an alternative to a GRU. MUT1, MUT2 and MUT3 are the best of
    the thousands of architectures Jozefowicz et al. evaluated; on some of
    their tasks they beat the LSTM and the GRU, on others not. In MUT3 the
    update gate `z` reads the squashed state `tanh(h_t)`. With `h_t` the
    previous state and `h_{t+1}` the new one (the paper's notation):

        z = σ(W_xz x_t + W_hz tanh(h_t) + b_z)
        r = σ(W_xr x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 - z)

    `σ` is `recurrent_activation` and the outer `tanh` is `activation`; the
    inner `tanh(h_t)` is part of the architecture and stays `tanh`. In Keras's
    row-vector convention `W x_t` is `x_t @ W`: `kernel` is
    `[W_xz | W_xr | W_xh]` of shape `(input_dim, 3 * units)`,
    `recurrent_kernel` is `[W_hz | W_hr | W_hh]` of shape `(units, 3 * units)`
    and `bias` is `[b_z | b_r | b_h]` of shape `(3 * units,)`. MUT3 has no
    bare `x_t` term, so it takes inputs of any width exactly as in the paper.

    `z` is the share of the candidate that is written and `1 - z` the share
    of the state that is kept, the opposite of Keras's GRU: a *negative*
    `update_bias` makes the cell remember longer, and `chrono_timesteps=T`
    sets `b_z = -log(U[1, T - 1])` (the GRU's chrono bias, negated) and
    `b_r = b_h = 0`. Dropout, as in Keras's cells, draws one mask per
    sequence: `dropout` on `x_t`, `recurrent_dropout` on `h_t` inside the
    matrix products (`tanh(h_t)` included); the `h_t ⊙ (1 - z)` carried over
    is not dropped.

    Args:
        units: int, dimensionality of the output space.
        activation: activation of the candidate (the paper's outer `tanh`).
            Defaults to `"tanh"`.
        recurrent_activation: activation of the gates (the paper's `σ`).
            Defaults to `"sigmoid"`.
        use_bias: bool, whether to use a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Defaults to
            `"orthogonal"`.
        bias_initializer: Keras's initializer of the `(3 * units,)` bias, or
            `None` to build it from the gate arguments. When given, the gate
            arguments must stay at their defaults. Defaults to `None`.
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
        seed: int or `None`, seed of the dropout masks and of chrono
            initialization. Defaults to `None`.
        update_bias: float, initial update-gate bias `b_z`; negative values
            keep the state longer. Defaults to `0.0`.
        reset_bias: float, initial reset-gate bias `b_r`. Defaults to `0.0`.
        candidate_bias: float, initial candidate bias `b_h`. Defaults to `0.0`.
        chrono_timesteps: number >= 2 or `None`; chrono initialization,
            `b_z = -log(U[1, chrono_timesteps - 1])`, instead of the constant
            gate biases, which must then stay at their defaults. Defaults to
            `None`.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        states: tensor (or list of one tensor) of shape `(batch, units)`.
        training: bool, whether dropout applies.

    Returns:
        `(h, new_state)` with `h` of shape `(batch, units)`.

    Example:

    >>> import numpy as np, keras, keras_gradkit
    >>> cell = keras_gradkit.layers.MUT3Cell(8, recurrent_dropout=0.1)
    >>> rnn = keras.layers.RNN(cell)
    >>> tuple(rnn(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
        Tallec & Ollivier, [Can recurrent neural networks warp time?](
        https://arxiv.org/abs/1804.11188), 2018.
    """

    _kernel_blocks = 3  # W_xz, W_xr, W_xh
    _recurrent_blocks = 3  # W_hz, W_hr, W_hh

    def _gates(self, x, h):
        b_z, b_r, b_h = self._biases()
        x_z, x_r, x_h = self._input_terms(x)
        z = self.recurrent_activation(x_z + self._recurrent_block(ops.tanh(h), 0) + b_z)
        r = self.recurrent_activation(x_r + self._recurrent_block(h, 1) + b_r)
        return z, r, x_h + b_h


def _from_cell(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}`.")


class _MUTLayer(keras.layers.RNN):
    """What the three layers share: `keras.layers.RNN` around the cell that
    `_cell_class` builds from the flat arguments, as `keras.layers.GRU`
    builds its `GRUCell`; the config holds the flat arguments, not the cell."""

    _cell_class = None

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
        update_bias=0.0,
        reset_bias=0.0,
        candidate_bias=0.0,
        chrono_timesteps=None,
        **kwargs,
    ):
        for name, value in (
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("go_backwards", go_backwards),
            ("stateful", stateful),
            ("unroll", unroll),
        ):
            _validation.bool_arg(name, value)
        cell = self._cell_class(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            update_bias=update_bias,
            reset_bias=reset_bias,
            candidate_bias=candidate_bias,
            chrono_timesteps=chrono_timesteps,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name=f"{self._cell_class.__name__[:4].lower()}_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=3)

    units = _from_cell("units")
    activation = _from_cell("activation")
    recurrent_activation = _from_cell("recurrent_activation")
    use_bias = _from_cell("use_bias")
    kernel_initializer = _from_cell("kernel_initializer")
    recurrent_initializer = _from_cell("recurrent_initializer")
    bias_initializer = _from_cell("bias_initializer")
    kernel_regularizer = _from_cell("kernel_regularizer")
    recurrent_regularizer = _from_cell("recurrent_regularizer")
    bias_regularizer = _from_cell("bias_regularizer")
    kernel_constraint = _from_cell("kernel_constraint")
    recurrent_constraint = _from_cell("recurrent_constraint")
    bias_constraint = _from_cell("bias_constraint")
    dropout = _from_cell("dropout")
    recurrent_dropout = _from_cell("recurrent_dropout")
    seed = _from_cell("seed")
    update_bias = _from_cell("update_bias")
    reset_bias = _from_cell("reset_bias")
    candidate_bias = _from_cell("candidate_bias")
    chrono_timesteps = _from_cell("chrono_timesteps")

    def get_config(self):
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        base = super().get_config()
        del base["cell"]
        activity = keras.regularizers.serialize(self.activity_regularizer)
        return {**base, **cell_config, "activity_regularizer": activity}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_gradkit_export
class MUT1(_MUTLayer):
    """MUT1 over a whole sequence, built from flat arguments like `keras.layers.GRU`.

    Use it where you would use `keras.layers.GRU`: it takes the GRU's
    arguments, with the same names and positions, except `reset_after` and
    `use_cudnn` (MUT1 has no fused kernel; Keras's step loop runs it). It is
    `keras.layers.RNN` around a `keras_gradkit.layers.MUT1Cell` named
    `mut1_cell`, with masking, `initial_state`, `return_state`,
    `go_backwards`, `stateful` and `unroll`. For each step:

        z = σ(W_xz x_t + b_z)
        r = σ(W_xr x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + tanh(x_t) + b_h) ⊙ z + h_t ⊙ (1 - z)

    with `tanh(x_t P)` in place of `tanh(x_t)` when the input width is not
    `units` (the one deviation from the paper), and `1 - z` the share of the
    state kept: a negative `update_bias` keeps the state longer. The weights
    and their layout are the cell's.

    Args:
        units: as in `keras_gradkit.layers.MUT1Cell`, and so are `activation`,
            `recurrent_activation`, `use_bias`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `kernel_regularizer`,
            `recurrent_regularizer`, `bias_regularizer`, `kernel_constraint`,
            `recurrent_constraint`, `bias_constraint`, `dropout`,
            `recurrent_dropout`, `seed`, `update_bias`, `reset_bias`,
            `candidate_bias` and `chrono_timesteps`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        return_sequences: bool, return the whole sequence. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards. Defaults to
            `False`.
        stateful: bool, carry the last state over to the next batch.
            Defaults to `False`.
        unroll: bool, unroll the loop. Defaults to `False`.

    Call arguments:
        sequences: tensor of shape `(batch, timesteps, features)`.
        initial_state: optional tensor of shape `(batch, units)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`.
        training: bool, whether dropout applies.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; followed by the final state with
        `return_state=True`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.MUT1(8, update_bias=-1.0)
    >>> tuple(layer(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
    """

    _cell_class = MUT1Cell


@keras_gradkit_export
class MUT2(_MUTLayer):
    """MUT2 over a whole sequence, built from flat arguments like `keras.layers.GRU`.

    Use it where you would use `keras.layers.GRU`: it takes the GRU's
    arguments, with the same names and positions, except `reset_after` and
    `use_cudnn` (MUT2 has no fused kernel; Keras's step loop runs it). It is
    `keras.layers.RNN` around a `keras_gradkit.layers.MUT2Cell` named
    `mut2_cell`, with masking, `initial_state`, `return_state`,
    `go_backwards`, `stateful` and `unroll`. For each step:

        z = σ(W_xz x_t + W_hz h_t + b_z)
        r = σ(x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 - z)

    with `x_t P` in place of the bare `x_t` in `r` when the input width is
    not `units` (the one deviation from the paper), and `1 - z` the share of
    the state kept: a negative `update_bias` keeps the state longer. The
    weights and their layout are the cell's.

    Args:
        units: as in `keras_gradkit.layers.MUT2Cell`, and so are `activation`,
            `recurrent_activation`, `use_bias`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `kernel_regularizer`,
            `recurrent_regularizer`, `bias_regularizer`, `kernel_constraint`,
            `recurrent_constraint`, `bias_constraint`, `dropout`,
            `recurrent_dropout`, `seed`, `update_bias`, `reset_bias`,
            `candidate_bias` and `chrono_timesteps`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        return_sequences: bool, return the whole sequence. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards. Defaults to
            `False`.
        stateful: bool, carry the last state over to the next batch.
            Defaults to `False`.
        unroll: bool, unroll the loop. Defaults to `False`.

    Call arguments:
        sequences: tensor of shape `(batch, timesteps, features)`.
        initial_state: optional tensor of shape `(batch, units)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`.
        training: bool, whether dropout applies.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; followed by the final state with
        `return_state=True`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.MUT2(8, return_sequences=True)
    >>> tuple(layer(np.zeros((2, 5, 8))).shape)
    (2, 5, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
    """

    _cell_class = MUT2Cell


@keras_gradkit_export
class MUT3(_MUTLayer):
    """MUT3 over a whole sequence, built from flat arguments like `keras.layers.GRU`.

    Use it where you would use `keras.layers.GRU`: it takes the GRU's
    arguments, with the same names and positions, except `reset_after` and
    `use_cudnn` (MUT3 has no fused kernel; Keras's step loop runs it). It is
    `keras.layers.RNN` around a `keras_gradkit.layers.MUT3Cell` named
    `mut3_cell`, with masking, `initial_state`, `return_state`,
    `go_backwards`, `stateful` and `unroll`. For each step, exactly as in
    the paper:

        z = σ(W_xz x_t + W_hz tanh(h_t) + b_z)
        r = σ(W_xr x_t + W_hr h_t + b_r)
        h_{t+1} = tanh(W_hh (r ⊙ h_t) + W_xh x_t + b_h) ⊙ z + h_t ⊙ (1 - z)

    with `1 - z` the share of the state kept: a negative `update_bias` keeps
    the state longer. The weights and their layout are the cell's.

    Args:
        units: as in `keras_gradkit.layers.MUT3Cell`, and so are `activation`,
            `recurrent_activation`, `use_bias`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `kernel_regularizer`,
            `recurrent_regularizer`, `bias_regularizer`, `kernel_constraint`,
            `recurrent_constraint`, `bias_constraint`, `dropout`,
            `recurrent_dropout`, `seed`, `update_bias`, `reset_bias`,
            `candidate_bias` and `chrono_timesteps`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        return_sequences: bool, return the whole sequence. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards. Defaults to
            `False`.
        stateful: bool, carry the last state over to the next batch.
            Defaults to `False`.
        unroll: bool, unroll the loop. Defaults to `False`.

    Call arguments:
        sequences: tensor of shape `(batch, timesteps, features)`.
        initial_state: optional tensor of shape `(batch, units)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`.
        training: bool, whether dropout applies.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; followed by the final state with
        `return_state=True`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.MUT3(8, chrono_timesteps=100)
    >>> tuple(layer(np.zeros((2, 5, 3))).shape)
    (2, 8)

    References:
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
    """

    _cell_class = MUT3Cell
