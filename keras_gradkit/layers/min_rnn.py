"""minGRU and minLSTM: recurrences whose gates read only the input, so that a
whole sequence is one parallel scan (Feng et al. 2024)."""

import keras
from keras import ops

from keras_gradkit import _validation, backend
from keras_gradkit.api_export import keras_gradkit_export

# The mark `keras.layers.RNN` looks for to create a cell's dropout masks
# before its loop and forget them after the call (see `backend/keras_private.py`).
from keras_gradkit.backend.keras_private import DropoutRNNCell
from keras_gradkit.layers._ind_recurrence import masked_output_repeats_state

MODES = ("auto", "parallel", "sequential")


def _serialize_or_none(serialize, value):
    return None if value is None else serialize(value)


def _check_bias_arguments(use_bias, bias_initializer, gates, others):
    """Raises `ValueError` when the bias is given twice (Keras's
    `bias_initializer` and a gate argument), or when an argument acts on a
    bias that `use_bias=False` leaves out. `gates` maps each gate argument
    to its value and default; `others` the other bias arguments to theirs."""
    given = [f"{n}={v!r}" for n, (v, default) in gates.items() if v != default]
    if bias_initializer is not None and given:
        raise ValueError(
            f"The bias is given twice: by {', '.join(given)} and by "
            f"bias_initializer={bias_initializer!r}. Use the gate arguments alone, or "
            "leave them at their defaults and pass `bias_initializer`."
        )
    if use_bias:
        return
    given += [f"{n}={v!r}" for n, (v, default) in others.items() if v is not default]
    if given:
        raise ValueError(
            f"With `use_bias=False` there is no bias, so {', '.join(given)} has nothing "
            "to act on; drop it, or set `use_bias=True`."
        )


def _gate_constants(values):
    """The initializer of a bias made of one constant block of `units` per
    gate, in the order of `values`."""

    def initialize(shape, dtype=None):
        units = shape[-1] // len(values)
        blocks = [ops.full((units,), v, dtype=dtype or keras.config.floatx()) for v in values]
        return ops.concatenate(blocks, axis=0)

    return initialize


def _at_least_float32(x):
    """`x` in float32, or in float64 if it is: the gates and the scan never
    run in half precision."""
    return ops.cast(x, keras.backend.result_type(x.dtype, "float32"))


def _compose(earlier, later):
    """`h -> a2 (a1 h + b1) + b2`: two steps of `h_t = a_t h_{t-1} + b_t` as one."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _linear_recurrence(a, b, h0, parallel):
    """Every state of `h_t = a_t * h_{t-1} + b_t` from `h0`.

    Args:
        a, b: tensors `(timesteps, batch, units)`.
        h0: tensor `(batch, units)`.
        parallel: bool, an associative scan over the pairs `(a_t, b_t)`
            (`log2(timesteps)` levels) instead of a loop over the steps.

    Returns:
        The states `h_1 .. h_T`, `(timesteps, batch, units)`.
    """
    if parallel:
        # `h0` enters through the first step: b_1 + a_1 h0.
        b = ops.concatenate([b[:1] + a[:1] * h0[None], b[1:]], axis=0)
        states = ops.associative_scan(_compose, (a, b), axis=0)[1]
        # TensorFlow's scan, traced in a graph, returns a tensor of unknown
        # rank (its interleaving runs in `tf.cond`): give it back its shape.
        return ops.reshape(states, ops.shape(b))

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return ops.scan(step, h0, (a, b))[1]


class _MinRNNCell(keras.layers.Layer, DropoutRNNCell):
    """What `MinGRUCell` and `MinLSTMCell` share: one kernel and one bias
    holding a block of `units` per gate, in `GATES` order, and the step
    `h_t = a_t * h_{t-1} + b_t` whose `(a_t, b_t)` `coefficients` computes
    from the projected input alone."""

    GATES = ()  # the gate arguments (`update_bias`, ...) in kernel order
    GATE_DEFAULTS = {}

    def __init__(
        self,
        units,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        kernel_constraint,
        bias_constraint,
        dropout,
        seed,
        gates,
        **kwargs,
    ):
        _validation.positive_int("units", units)
        _validation.bool_arg("use_bias", use_bias)
        _validation.fraction("dropout", dropout)
        for name, value in gates.items():
            _validation.finite_float(name, value)
        _check_bias_arguments(
            use_bias,
            bias_initializer,
            {n: (v, self.GATE_DEFAULTS[n]) for n, v in gates.items()},
            {
                "bias_regularizer": (bias_regularizer, None),
                "bias_constraint": (bias_constraint, None),
            },
        )
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = (
            None if bias_initializer is None else keras.initializers.get(bias_initializer)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.recurrent_dropout = 0.0  # as Keras's cells have it; there is no recurrent kernel
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        for name, value in gates.items():
            setattr(self, name, float(value))
        self._dropout_mask = None
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} needs a known feature dimension (last axis). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        width = len(self.GATES) * self.units
        self.kernel = self.add_weight(
            shape=(input_dim, width),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(width,),
                name="bias",
                initializer=self.bias_initializer
                or _gate_constants([getattr(self, g) for g in self.GATES]),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def project(self, inputs):
        """`inputs @ kernel + bias`, the gates' pre-activations side by side."""
        projected = ops.matmul(inputs, self.kernel)
        return projected if self.bias is None else projected + self.bias

    def coefficients(self, projected):
        """`(a_t, b_t)` from `project`'s output, in float32 at least."""
        raise NotImplementedError

    def call(self, sequence, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_prev = states[0] if nested else states
        dropout_mask = self.get_dropout_mask(sequence)
        if training and dropout_mask is not None:
            sequence = sequence * dropout_mask
        a, b = self.coefficients(self.project(sequence))
        h = ops.cast(a * ops.cast(h_prev, a.dtype) + b, h_prev.dtype)
        return h, ([h] if nested else h)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    # One input dropout mask per sequence, shared by its time steps, as in
    # `IndRNNCell`: `keras.layers.RNN` asks for it before its loop (JAX's
    # `lax.scan` must draw no random numbers) and resets it after each call.
    def get_dropout_mask(self, step_input):
        """The input dropout mask of the current call, drawn at the first
        request (shaped like `step_input`, one time step); None without
        dropout."""
        if self._dropout_mask is None and self.dropout > 0:
            ones = ops.ones_like(step_input)
            self._dropout_mask = keras.random.dropout(
                ones, rate=self.dropout, seed=self.seed_generator
            )
        return self._dropout_mask

    def get_recurrent_dropout_mask(self, step_input):
        """None: there is no recurrent kernel to drop from."""
        del step_input
        return None

    def reset_dropout_mask(self):
        """Forgets the input dropout mask, so the next call draws a new one."""
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self):
        """Nothing to forget: there is no recurrent dropout."""

    def get_config(self):
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": _serialize_or_none(
                keras.initializers.serialize, self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "seed": self.seed,
            **{name: getattr(self, name) for name in self.GATES},
        }
        return {**super().get_config(), **config}


@keras_gradkit_export
class MinGRUCell(_MinRNNCell):
    """minGRU cell: a GRU whose gate and candidate read only the input.

    Use it inside `keras.layers.RNN` or `keras.layers.StackedRNNCells` when
    you need a cell; for whole sequences `keras_gradkit.layers.MinGRU`
    computes the same thing as one parallel scan over time.

    Equation (Feng et al. 2024, minGRU):

        z_t = sigmoid(x_t W_z + b_z),  h̃_t = activation(x_t W_h + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    Note the sense of `z`, the paper's: `z_t` near 1 replaces the state,
    the opposite of `keras.layers.GRU`, whose `z_t` near 1 keeps it. So a
    negative `update_bias` makes the cell remember longer. The weights are
    `kernel` `(features, 2 * units)` and `bias` `(2 * units,)`, the gates
    in the order `z, h̃`.

    Args:
        units: int, number of units. Must be >= 1.
        activation: activation of the candidate `h̃`. Defaults to
            `"linear"` (the paper's `h̃_t = Linear_h(x_t)`).
        use_bias: bool, whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the whole `bias`, or `None` to
            start each gate at its gate argument. When given, the gate
            arguments must stay at their defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel`. Defaults to `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel`. Defaults to `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, fraction of the input units dropped, with
            one mask shared by all time steps of a sequence. Defaults to `0.0`.
        seed: int or `None`, seed of the dropout mask. Defaults to `None`.
        update_bias: float, initial bias `b_z` of the update gate. Defaults
            to `0.0`.
        candidate_bias: float, initial bias `b_h` of the candidate. Defaults
            to `0.0`.

    Call arguments:
        sequence: tensor of shape `(batch, features)`, one time step.
        states: list holding the previous state `(batch, units)`.
        training: bool, whether dropout is applied.

    Returns:
        `(h_t, [h_t])`, each of shape `(batch, units)`.

    Example:

    >>> import keras, numpy as np, keras_gradkit
    >>> cell = keras_gradkit.layers.MinGRUCell(8, update_bias=-1.0)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(np.ones((2, 20, 3), "float32")).shape)
    (2, 20, 8)

    References:
        Feng et al., [Were RNNs All We Needed?](https://arxiv.org/abs/2410.01201),
        2024.
    """

    GATES = ("update_bias", "candidate_bias")
    GATE_DEFAULTS = {"update_bias": 0.0, "candidate_bias": 0.0}

    def __init__(
        self,
        units,
        activation="linear",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        update_bias=0.0,
        candidate_bias=0.0,
        **kwargs,
    ):
        super().__init__(
            units,
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
            dropout,
            seed,
            gates={"update_bias": update_bias, "candidate_bias": candidate_bias},
            **kwargs,
        )

    def coefficients(self, projected):
        z, candidate = ops.split(_at_least_float32(projected), 2, axis=-1)
        # 1 - sigmoid(z), without the cancellation for large z.
        return ops.sigmoid(-z), ops.sigmoid(z) * self.activation(candidate)


@keras_gradkit_export
class MinLSTMCell(_MinRNNCell):
    """minLSTM cell: an LSTM whose gates read only the input and whose forget
    and input gates are normalized to sum to 1.

    Use it inside `keras.layers.RNN` or `keras.layers.StackedRNNCells` when
    you need a cell; for whole sequences `keras_gradkit.layers.MinLSTM`
    computes the same thing as one parallel scan over time.

    Equation (Feng et al. 2024, minLSTM):

        f_t = sigmoid(x_t W_f + b_f),  i_t = sigmoid(x_t W_i + b_i)
        h̃_t = activation(x_t W_h + b_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    `f'_t` is computed as `sigmoid(log f_t - log i_t)`, the same value
    without `0 / 0` when both gates underflow. The weights are `kernel`
    `(features, 3 * units)` and `bias` `(3 * units,)`, the gates in Keras's
    LSTM order `i, f, h̃`.

    Args:
        units: int, number of units. Must be >= 1.
        activation: activation of the candidate `h̃`. Defaults to
            `"linear"` (the paper's `h̃_t = Linear_h(x_t)`).
        use_bias: bool, whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer of `kernel`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the whole `bias`, or `None` to
            start each gate at its gate argument. When given, the gate
            arguments must stay at their defaults. Defaults to `None`.
        kernel_regularizer: regularizer of `kernel`. Defaults to `None`.
        bias_regularizer: regularizer of `bias`. Defaults to `None`.
        kernel_constraint: constraint of `kernel`. Defaults to `None`.
        bias_constraint: constraint of `bias`. Defaults to `None`.
        dropout: float in `[0, 1)`, fraction of the input units dropped, with
            one mask shared by all time steps of a sequence. Defaults to `0.0`.
        seed: int or `None`, seed of the dropout mask. Defaults to `None`.
        forget_bias: float, initial bias `b_f` of the forget gate; a
            positive value makes the cell remember longer. Defaults to `0.0`.
        input_bias: float, initial bias `b_i` of the input gate. Defaults to
            `0.0`.
        candidate_bias: float, initial bias `b_h` of the candidate. Defaults
            to `0.0`.

    Call arguments:
        sequence: tensor of shape `(batch, features)`, one time step.
        states: list holding the previous state `(batch, units)`.
        training: bool, whether dropout is applied.

    Returns:
        `(h_t, [h_t])`, each of shape `(batch, units)`.

    Example:

    >>> import keras, numpy as np, keras_gradkit
    >>> cell = keras_gradkit.layers.MinLSTMCell(8, forget_bias=1.0)
    >>> rnn = keras.layers.RNN(cell)
    >>> tuple(rnn(np.ones((2, 20, 3), "float32")).shape)
    (2, 8)

    References:
        Feng et al., [Were RNNs All We Needed?](https://arxiv.org/abs/2410.01201),
        2024.
    """

    GATES = ("input_bias", "forget_bias", "candidate_bias")
    GATE_DEFAULTS = {"forget_bias": 0.0, "input_bias": 0.0, "candidate_bias": 0.0}

    def __init__(
        self,
        units,
        activation="linear",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        forget_bias=0.0,
        input_bias=0.0,
        candidate_bias=0.0,
        **kwargs,
    ):
        super().__init__(
            units,
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
            dropout,
            seed,
            gates={
                "forget_bias": forget_bias,
                "input_bias": input_bias,
                "candidate_bias": candidate_bias,
            },
            **kwargs,
        )

    def coefficients(self, projected):
        i, f, candidate = ops.split(_at_least_float32(projected), 3, axis=-1)
        # log f - log i, with log sigmoid(x) = -softplus(-x).
        logit = ops.softplus(-i) - ops.softplus(-f)
        return ops.sigmoid(logit), ops.sigmoid(-logit) * self.activation(candidate)


class _MinRNN(keras.layers.RNN):
    """What `MinGRU` and `MinLSTM` share: `keras.layers.RNN` with a loop that
    projects the whole sequence at once and runs the recurrence as a scan."""

    def __init__(
        self,
        cell,
        activity_regularizer,
        return_sequences,
        return_state,
        go_backwards,
        stateful,
        mode,
        **kwargs,
    ):
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.mode = mode

    @classmethod
    def _check_layer_arguments(cls, mode, kwargs):
        """Raises `ValueError` for a `mode` or `unroll` this layer cannot take;
        called before the cell is made, so that nothing is created."""
        _validation.one_of("mode", mode, MODES)
        if kwargs.get("unroll", False):
            raise ValueError(
                f"{cls.__name__} does not support `unroll=True`: it computes the "
                "recurrence as a scan; `mode='sequential'` runs it step by step. "
                f"Received: unroll={kwargs['unroll']!r}"
            )
        kwargs.pop("unroll", None)

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank 3 (batch, timesteps, "
                f"features). Received: input shape={tuple(sequences_shape)}"
            )
        super().build(sequences_shape, initial_state_shape)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if sequences.shape[1] is None:
            # Both scans need the number of steps when traced (a TensorFlow
            # SavedModel signature leaves it open); Keras's loop does not.
            return super().inner_loop(sequences, initial_state, mask, training)
        cell = self.cell
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        if training and cell.dropout > 0:
            dropout_mask = cell.get_dropout_mask(sequences[:, 0])
            sequences = sequences * ops.expand_dims(dropout_mask, 1)
        # Time-major, and in float32 under a mixed policy: the scan
        # multiplies up to `timesteps` gates.
        a, b = cell.coefficients(cell.project(ops.transpose(sequences, (1, 0, 2))))
        step_mask = None
        if mask is not None:
            step_mask = ops.expand_dims(ops.transpose(ops.cast(mask, "bool")), -1)
            # A masked step leaves the state as it is: h_t = 1 * h_{t-1} + 0.
            a = ops.where(step_mask, a, ops.ones_like(a))
            b = ops.where(step_mask, b, ops.zeros_like(b))
        if self.go_backwards:
            a, b = ops.flip(a, axis=0), ops.flip(b, axis=0)
            step_mask = None if step_mask is None else ops.flip(step_mask, axis=0)
        parallel = self._resolved_mode == "parallel"
        states = _linear_recurrence(a, b, ops.cast(h0, a.dtype), parallel)
        return self._outputs(states, step_mask)

    @property
    def _resolved_mode(self):
        # `mode="auto"`: what trained faster on the running backend.
        if self.mode == "auto":
            return backend.get("linear_recurrence").AUTO_MODE
        return self.mode

    def _outputs(self, states, step_mask):
        """Keras's conventions for masked steps, as in `IndRNN`: the output
        repeats the last unmasked output (before the first one: zeros, or
        the initial state where the backend's Keras does so), or is zero
        with `zero_output_for_mask=True`; the state is carried through."""
        keep = None
        if step_mask is not None and self.zero_output_for_mask:
            keep = step_mask
        elif step_mask is not None and not masked_output_repeats_state():
            keep = ops.cumsum(ops.cast(step_mask, "int32"), axis=0) > 0
        outputs = states if keep is None else ops.where(keep, states, ops.zeros_like(states))
        return outputs[-1], ops.transpose(outputs, (1, 0, 2)), [states[-1]]

    @property
    def units(self):
        return self.cell.units

    def get_config(self):
        config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        base = super().get_config()
        del base["cell"]
        return {
            **base,
            **config,
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "mode": self.mode,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_gradkit_export
class MinGRU(_MinRNN):
    """minGRU layer: a GRU without recurrent weights in its gates, computed
    over the whole sequence by a parallel scan or a loop.

    Use it for long sequences where a GRU's step-by-step loop is the
    bottleneck: the gate and the candidate read only the input, so every
    step's coefficients come from one matrix product and the recurrence
    `h_t = a_t ⊙ h_{t-1} + b_t` is an associative scan. It computes exactly
    what `keras.layers.RNN(keras_gradkit.layers.MinGRUCell(...))` computes
    (same weights), with masking, `initial_state`, `return_state`,
    `stateful` and `go_backwards`, and works in `keras.layers.Bidirectional`.

    Equation (Feng et al. 2024, minGRU), with `a_t = 1 - z_t`, `b_t = z_t ⊙ h̃_t`:

        z_t = sigmoid(x_t W_z + b_z),  h̃_t = activation(x_t W_h + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    The initial state is zeros unless given. A masked step leaves the state
    unchanged (`a_t = 1`, `b_t = 0`). The scan runs in float32 under a
    mixed precision policy. The paper's log-space scan and its activation
    `g` (which keeps the states positive for it) are not needed: the scan
    composes the pairs directly, `(a1, b1)∘(a2, b2) = (a1 a2, a2 b1 + b2)`,
    for states of any sign.

    Args:
        units: as in `keras_gradkit.layers.MinGRUCell`, and so are
            `activation`, `use_bias`, `kernel_initializer`,
            `bias_initializer`, `kernel_regularizer`, `bias_regularizer`,
            `kernel_constraint`, `bias_constraint`, `dropout` and `seed`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        return_sequences: bool, return the whole sequence of outputs instead
            of the last one. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards (outputs are in the
            order processed, as in Keras). Defaults to `False`.
        stateful: bool, carry the last state of batch i into batch i + 1.
            Defaults to `False`.
        mode: `"parallel"` (an associative scan over the pairs
            `(a_t, b_t)` of `h_t = a_t ⊙ h_{t-1} + b_t`, `log2(timesteps)`
            levels deep), `"sequential"` (a loop over the steps,
            `keras.ops.scan`) or `"auto"`: the mode that trained faster
            in `model.fit` on the running backend, measured on a CPU
            (`benchmarks/rnn_speed.py`): `"parallel"` on PyTorch,
            `"sequential"` on TensorFlow and JAX. Both compute the same
            values; when the number of time steps is unknown while
            tracing (a TensorFlow SavedModel signature), both run Keras's
            loop over the cell instead. Defaults to `"auto"`.
        update_bias: float, the initial bias of the update gate z, as in
            `keras_gradkit.layers.MinGRUCell`. Defaults to 0.
        candidate_bias: float, the initial bias of the candidate, as in
            `keras_gradkit.layers.MinGRUCell`. Defaults to 0.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: optional list with one `(batch, units)` tensor.
        mask: optional boolean `(batch, timesteps)`.
        training: bool, whether dropout is applied.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; with `return_state=True`, a list of the
        output and the last state.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.MinGRU(16, return_sequences=True)
    >>> tuple(layer(np.ones((4, 50, 2), "float32")).shape)
    (4, 50, 16)

    References:
        Feng et al., [Were RNNs All We Needed?](https://arxiv.org/abs/2410.01201),
        2024.
    """

    def __init__(
        self,
        units,
        activation="linear",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        mode="auto",
        update_bias=0.0,
        candidate_bias=0.0,
        **kwargs,
    ):
        self._check_layer_arguments(mode, kwargs)
        cell = MinGRUCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            seed=seed,
            update_bias=update_bias,
            candidate_bias=candidate_bias,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="min_gru_cell",
        )
        super().__init__(
            cell,
            activity_regularizer,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            mode,
            **kwargs,
        )


@keras_gradkit_export
class MinLSTM(_MinRNN):
    """minLSTM layer: an LSTM without recurrent weights in its gates, computed
    over the whole sequence by a parallel scan or a loop.

    Use it for long sequences where an LSTM's step-by-step loop is the
    bottleneck: the gates and the candidate read only the input, so every
    step's coefficients come from one matrix product and the recurrence
    `h_t = a_t ⊙ h_{t-1} + b_t` is an associative scan. It computes exactly
    what `keras.layers.RNN(keras_gradkit.layers.MinLSTMCell(...))` computes
    (same weights), with masking, `initial_state`, `return_state`,
    `stateful` and `go_backwards`, and works in `keras.layers.Bidirectional`.

    Equation (Feng et al. 2024, minLSTM), with `a_t = f'_t`, `b_t = i'_t ⊙ h̃_t`:

        f_t = sigmoid(x_t W_f + b_f),  i_t = sigmoid(x_t W_i + b_i)
        h̃_t = activation(x_t W_h + b_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    The initial state is zeros unless given. A masked step leaves the state
    unchanged (`a_t = 1`, `b_t = 0`). The scan runs in float32 under a
    mixed precision policy. The paper's log-space scan and its activation
    `g` (which keeps the states positive for it) are not needed: the scan
    composes the pairs directly, `(a1, b1)∘(a2, b2) = (a1 a2, a2 b1 + b2)`,
    for states of any sign.

    Args:
        units: as in `keras_gradkit.layers.MinLSTMCell`, and so are
            `activation`, `use_bias`, `kernel_initializer`,
            `bias_initializer`, `kernel_regularizer`, `bias_regularizer`,
            `kernel_constraint`, `bias_constraint`, `dropout` and `seed`.
        activity_regularizer: regularizer of the output. Defaults to `None`.
        return_sequences: bool, return the whole sequence of outputs instead
            of the last one. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards (outputs are in the
            order processed, as in Keras). Defaults to `False`.
        stateful: bool, carry the last state of batch i into batch i + 1.
            Defaults to `False`.
        mode: `"parallel"` (an associative scan over the pairs
            `(a_t, b_t)` of `h_t = a_t ⊙ h_{t-1} + b_t`, `log2(timesteps)`
            levels deep), `"sequential"` (a loop over the steps,
            `keras.ops.scan`) or `"auto"`: the mode that trained faster
            in `model.fit` on the running backend, measured on a CPU
            (`benchmarks/rnn_speed.py`): `"parallel"` on PyTorch,
            `"sequential"` on TensorFlow and JAX. Both compute the same
            values; when the number of time steps is unknown while
            tracing (a TensorFlow SavedModel signature), both run Keras's
            loop over the cell instead. Defaults to `"auto"`.
        forget_bias: float, the initial bias of the forget gate, as in
            `keras_gradkit.layers.MinLSTMCell`. Defaults to 0.
        input_bias: float, the initial bias of the input gate, as in
            `keras_gradkit.layers.MinLSTMCell`. Defaults to 0.
        candidate_bias: float, the initial bias of the candidate, as in
            `keras_gradkit.layers.MinLSTMCell`. Defaults to 0.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: optional list with one `(batch, units)` tensor.
        mask: optional boolean `(batch, timesteps)`.
        training: bool, whether dropout is applied.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; with `return_state=True`, a list of the
        output and the last state.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.MinLSTM(16, forget_bias=1.0)
    >>> tuple(layer(np.ones((4, 50, 2), "float32")).shape)
    (4, 16)

    References:
        Feng et al., [Were RNNs All We Needed?](https://arxiv.org/abs/2410.01201),
        2024.
    """

    def __init__(
        self,
        units,
        activation="linear",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        mode="auto",
        forget_bias=0.0,
        input_bias=0.0,
        candidate_bias=0.0,
        **kwargs,
    ):
        self._check_layer_arguments(mode, kwargs)
        cell = MinLSTMCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            seed=seed,
            forget_bias=forget_bias,
            input_bias=input_bias,
            candidate_bias=candidate_bias,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="min_lstm_cell",
        )
        super().__init__(
            cell,
            activity_regularizer,
            return_sequences,
            return_state,
            go_backwards,
            stateful,
            mode,
            **kwargs,
        )
