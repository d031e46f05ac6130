"""IndRNN: the independently recurrent cell and its fast layer."""

import keras
from keras import ops

# Keras's own cells mix this in so that `keras.layers.RNN` creates one dropout
# mask per sequence before its loop (the mask must be shared over time and the
# loop must stay stateless). It is not exported publicly; nothing else fits.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.constraints import MaxAbs

# Time steps handled per iteration of the fast layer's loops: fewer loop
# iterations, same arithmetic. The largest divisor of the sequence length up to
# this value is used.
_MAX_CHUNK = 32
# Below this chunk size, a sequence is padded to a multiple of _PAD_CHUNK.
_MIN_CHUNK = 8
_PAD_CHUNK = 16
# Loop iterations that may overlap (TensorFlow's `parallel_iterations`; JAX
# unrolls this many iterations instead).
_PARALLEL = 8


def _validate_cell_arguments(units, recurrent_max_abs, timesteps, dropout):
    _validation.positive_int("units", units)
    _validation.positive_float(
        "recurrent_max_abs", recurrent_max_abs, allow_none=True,
        hint="(it bounds |recurrent_kernel|)",
    )
    _validation.positive_int("timesteps", timesteps, allow_none=True)
    _validation.fraction("dropout", dropout)


def recurrent_bound(recurrent_max_abs=None, timesteps=None):
    """The IndRNN bound on `|recurrent_kernel|`: `recurrent_max_abs` if given,
    else `2 ** (1 / timesteps)` if `timesteps` is given, else None (no bound)."""
    if recurrent_max_abs is not None:
        return float(recurrent_max_abs)
    if timesteps is not None:
        return 2.0 ** (1.0 / timesteps)
    return None


@keras_gradkit_export
class IndRNNCell(keras.layers.Layer, DropoutRNNCell):
    """Independently recurrent cell (IndRNN): each unit sees only its own past.

    Use it inside `keras.layers.RNN`, `keras.layers.StackedRNNCells` or
    `keras.layers.Bidirectional` when you need a cell; for whole sequences
    `keras_gradkit.layers.IndRNN` computes the same thing faster. Because
    the recurrence is elementwise, the gradient through T steps scales with
    `recurrent_kernel ** T` per unit, so bounding `|recurrent_kernel|`
    keeps it from exploding or vanishing over thousands of steps.

    Equation: `h_t = activation(x_t @ kernel + recurrent_kernel * h_{t-1} + bias)`
    with `recurrent_kernel` a vector of shape `(units,)`.

    The bound `|recurrent_kernel| <= recurrent_max_abs` (or `2 ** (1 / timesteps)`
    when only `timesteps` is given, as in the paper) is enforced by a
    `keras_gradkit.constraints.MaxAbs` constraint, i.e. projected after each
    optimizer update, never clipped inside the forward pass.

    Args:
        units: int, number of units. Must be >= 1.
        activation: activation function. Defaults to `"relu"`, as in the paper.
        use_bias: bool, whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer of the input kernel
            `(input_dim, units)`. Defaults to `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel` `(units,)`.
            Defaults to `None`: uniform in `[0, bound]`, or in `[0, 1]` when
            there is no bound. The paper's recipe for the last layer of a task
            that reads only the final output is
            `keras.initializers.RandomUniform(0.5 ** (1 / T), 2 ** (1 / T))`.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        recurrent_max_abs: positive float or None, the bound on
            `|recurrent_kernel|`. Defaults to `None`.
        timesteps: positive int or None. When `recurrent_max_abs` is None, a
            given `timesteps=T` sets the bound to `2 ** (1 / T)`. Defaults to
            `None`.
        kernel_regularizer: regularizer of the input kernel. Defaults to `None`.
        recurrent_regularizer: regularizer of `recurrent_kernel`. Defaults to
            `None` (the paper applies no weight decay to it).
        bias_regularizer: regularizer of the bias. Defaults to `None`.
        kernel_constraint: constraint of the input kernel. Defaults to `None`.
        bias_constraint: constraint of the bias. Defaults to `None`.
        dropout: float in `[0, 1)`, fraction of the input units dropped, with
            one mask shared by all time steps of a sequence. Defaults to `0.0`.
        seed: int or None, seed of the dropout mask. Defaults to `None`.

    Call arguments:
        sequence: tensor of shape `(batch, features)`, one time step.
        states: list holding the previous state `(batch, units)`.
        training: bool, whether dropout is applied.

    Returns:
        `(h_t, [h_t])`, each of shape `(batch, units)`.

    Example:

    >>> import keras, numpy as np, keras_gradkit
    >>> cell = keras_gradkit.layers.IndRNNCell(8, timesteps=20)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> rnn(np.ones((2, 20, 3), "float32")).shape
    (2, 20, 8)

    References:
        Li et al., [Independently Recurrent Neural Network (IndRNN): Building
        A Longer and Deeper RNN](https://arxiv.org/abs/1803.04831), 2018.
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
        **kwargs,
    ):
        _validate_cell_arguments(units, recurrent_max_abs, timesteps, dropout)
        _validation.bool_arg("use_bias", use_bias)
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = (
            None
            if recurrent_initializer is None
            else keras.initializers.get(recurrent_initializer)
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
        self.recurrent_dropout = 0.0  # read by DropoutRNNCell; IndRNN has none
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = units
        self.output_size = units

    @property
    def bound(self):
        """The enforced bound on `|recurrent_kernel|`, or None."""
        return recurrent_bound(self.recurrent_max_abs, self.timesteps)

    def _default_recurrent_initializer(self):
        high = self.bound if self.bound is not None else 1.0
        return keras.initializers.RandomUniform(0.0, high, seed=self.seed)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "IndRNNCell needs a known feature dimension (last axis). "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        bound = self.bound
        self.recurrent_kernel = self.add_weight(
            shape=(self.units,),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer
            or self._default_recurrent_initializer(),
            regularizer=self.recurrent_regularizer,
            constraint=None if bound is None else MaxAbs(bound),
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def call(self, sequence, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_prev = states[0] if nested else states
        dropout_mask = self.get_dropout_mask(sequence)
        if training and dropout_mask is not None:
            sequence = sequence * dropout_mask
        pre = ops.matmul(sequence, self.kernel) + self.recurrent_kernel * h_prev
        if self.use_bias:
            pre = pre + self.bias
        h = self.activation(pre)
        return h, ([h] if nested else h)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def get_config(self):
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": (
                None
                if self.recurrent_initializer is None
                else keras.initializers.serialize(self.recurrent_initializer)
            ),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "recurrent_max_abs": self.recurrent_max_abs,
            "timesteps": self.timesteps,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(
                self.recurrent_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


# ----------------------------------------------------------------------------
# The fast path: one input projection per chunk of steps, then an elementwise recurrence
# whose backward pass is written by hand.


def _relu_backward(h, g):
    return ops.where(h > 0, g, 0.0)


def _tanh_backward(h, g):
    return g * (1 - h * h)


def _sigmoid_backward(h, g):
    return g * h * (1 - h)


def _linear_backward(h, g):
    return g


# Activations whose derivative is a function of their output, so the backward
# pass needs only the stored states.
_BACKWARD = {
    "relu": _relu_backward,
    "tanh": _tanh_backward,
    "sigmoid": _sigmoid_backward,
    "linear": _linear_backward,
}


def _backward_for(activation):
    name = getattr(activation, "__name__", None)
    if name in _BACKWARD and keras.activations.get(name) is activation:
        return _BACKWARD[name]
    return None


def _chunk_size(steps):
    if steps is None:
        return 1
    for size in range(min(_MAX_CHUNK, steps), 0, -1):
        if steps % size == 0:
            return size
    return 1


def _chunked(x, chunk):
    """(T, ...) -> (T // chunk, chunk, ...), keeping a static T static."""
    shape = ops.shape(x)
    steps = x.shape[0]
    return ops.reshape(x, (-1 if steps is None else steps // chunk, chunk) + tuple(shape[1:]))


def _scan(step, init, inputs, reverse=False):
    """`ops.scan` over a tuple of inputs.

    Keras's TensorFlow `scan` cannot check several inputs whose leading
    (time) axis is unknown, so in that case the inputs travel packed in one
    float tensor and are unpacked inside the loop.
    """
    if len(inputs) == 1 or inputs[0].shape[0] is not None:
        return ops.scan(step, init, inputs, reverse=reverse, unroll=_PARALLEL)
    dtype = init[0].dtype if isinstance(init, tuple) else init.dtype
    shapes = [ops.shape(x)[1:] for x in inputs]
    dtypes = [x.dtype for x in inputs]
    flat = [ops.reshape(ops.cast(x, dtype), (ops.shape(x)[0], -1)) for x in inputs]
    sizes = [ops.shape(f)[1] for f in flat]
    packed = ops.concatenate(flat, axis=1)

    def packed_step(carry, row):
        parts, start = [], 0
        for shape, size, original in zip(shapes, sizes, dtypes):
            part = ops.reshape(row[start : start + size], shape)
            if original == "bool":
                part = part > 0.5
            parts.append(part)
            start = start + size
        return step(carry, tuple(parts))

    return ops.scan(packed_step, init, packed, reverse=reverse, unroll=_PARALLEL)


def _project(x_chunk, kernel, bias):
    """`(chunk, batch, features) @ kernel + bias` as one matrix product."""
    shape = ops.shape(x_chunk)
    flat = ops.matmul(ops.reshape(x_chunk, (-1, shape[-1])), kernel) + bias
    return ops.reshape(flat, (shape[0], shape[1], -1))


def _scan_forward(x, kernel, bias, u, h0, mask, activation, chunk):
    """States of `h_t = act(x_t @ kernel + bias + u * h_{t-1})` (kept where
    `mask` is False) for time-major `x`, as `(T, batch, units)`. The input
    projection is one matrix product per chunk of steps, so the projected
    sequence is never stored."""

    def step(carry, inputs):
        h = carry[-1]
        x_rows = ops.unstack(_project(inputs[0], kernel, bias), num=chunk)
        m_rows = None if mask is None else ops.unstack(inputs[1], num=chunk)
        rows = []
        for j in range(chunk):
            new = activation(x_rows[j] + u * h)
            h = new if mask is None else ops.where(m_rows[j], new, h)
            rows.append(h)
        out = ops.stack(rows)
        return out, out

    inputs = (_chunked(x, chunk),)
    if mask is not None:
        inputs += (_chunked(mask, chunk),)
    init = ops.repeat(ops.expand_dims(h0, 0), chunk, axis=0)
    _, states = _scan(step, init, inputs)
    return ops.reshape(states, (-1,) + tuple(ops.shape(h0)))


def _scan_backward(grad_states, grad_last, states, x, kernel, u, h0, mask, backward, chunk):
    """Gradients w.r.t. `x`, `kernel`, `bias`, `u` and `h0`, given the
    gradient w.r.t. every state (`grad_states`) or, when only the last state
    is used, w.r.t. the last state (`grad_last`, `grad_states=None`). Runs from the last step to the first:
    `g_t = grad_t + c_t`, `dpre_t = g_t * act'(h_t)`, `c_{t-1} = dpre_t * u`
    (`c_{t-1} = g_t` where the step is masked); each chunk then turns its
    `dpre` into the input, kernel, bias and recurrent gradients."""
    state_chunks = _chunked(states, chunk)
    # The state just before each chunk: h0, then each chunk's last state.
    previous = ops.concatenate(
        [ops.expand_dims(h0, 0), state_chunks[:-1, -1]], axis=0
    )

    def step(carry, inputs):
        c = carry[1]
        g_rows = None if grad_states is None else ops.unstack(inputs[3], num=chunk)
        h_rows = ops.unstack(inputs[0], num=chunk)
        m_rows = None if mask is None else ops.unstack(inputs[-1], num=chunk)
        dpre_rows = [None] * chunk
        for j in reversed(range(chunk)):
            g = c if g_rows is None else g_rows[j] + c
            dpre = backward(h_rows[j], g)
            if mask is None:
                c = dpre * u
            else:
                dpre = ops.where(m_rows[j], dpre, ops.zeros_like(dpre))
                c = ops.where(m_rows[j], dpre * u, g)
            dpre_rows[j] = dpre
        dpre_chunk = ops.stack(dpre_rows)
        h_prev = ops.concatenate(
            [ops.expand_dims(inputs[1], 0), inputs[0][:-1]], axis=0
        )
        du = ops.sum(dpre_chunk * h_prev, axis=(0, 1))
        x_flat = ops.reshape(inputs[2], (-1, ops.shape(kernel)[0]))
        dpre_flat = ops.reshape(dpre_chunk, (-1, ops.shape(kernel)[1]))
        dx = ops.reshape(ops.matmul(dpre_flat, ops.transpose(kernel)), ops.shape(inputs[2]))
        dkernel = ops.matmul(ops.transpose(x_flat), dpre_flat)
        out = (dx, c, du, dkernel, ops.sum(dpre_flat, axis=0))
        return out, out

    inputs = (state_chunks, previous, _chunked(x, chunk))
    if grad_states is not None:
        inputs += (_chunked(grad_states, chunk),)
    if mask is not None:
        inputs += (_chunked(mask, chunk),)
    init = (
        ops.zeros_like(inputs[2][0]),
        ops.zeros_like(h0) if grad_last is None else grad_last,
        ops.zeros_like(u),
        ops.zeros_like(kernel),
        ops.zeros_like(u),
    )
    final, (dx, _, du, dkernel, dbias) = _scan(step, init, inputs, reverse=True)
    return (
        ops.reshape(dx, ops.shape(x)),
        ops.sum(dkernel, axis=0),
        ops.sum(dbias, axis=0),
        ops.sum(du, axis=0),
        final[1],
    )


def ind_recurrence(
    x,
    kernel,
    bias,
    u,
    h0,
    mask=None,
    activation=keras.activations.relu,
    last_only=False,
    chunk=None,
):
    """Runs `h_t = activation(x_t @ kernel + bias + u * h_{t-1})` over
    time-major inputs.

    Args:
        x: `(timesteps, batch, features)`.
        kernel: `(features, units)`.
        bias: `(units,)`.
        u: `(units,)`, the recurrent weights.
        h0: `(batch, units)`, the initial state.
        mask: optional boolean `(timesteps, batch, 1)`; masked steps keep the
            previous state.
        activation: the activation. For relu, tanh, sigmoid and linear the
            backward pass is hand-written (it needs only the stored states);
            other activations are differentiated automatically.
        last_only: return only the last state; the backward pass then skips
            the (all-zero) gradients of the other states.
        chunk: steps per loop iteration; must divide `timesteps`. Defaults to
            the largest divisor up to 32, padding the sequence with masked
            steps when there is no divisor of at least 8.

    Returns:
        The states, `(timesteps, batch, units)`, or the last one.
    """
    steps = x.shape[0]
    if chunk is None:
        chunk = _chunk_size(steps)
    if chunk < _MIN_CHUNK and (steps is None or steps > _MAX_CHUNK):
        # No good divisor (or an unknown length): pad with masked steps, which
        # keep the state, rather than loop one step at a time.
        return _padded_recurrence(x, kernel, bias, u, h0, mask, activation, last_only)
    backward = _backward_for(activation)
    if backward is None:
        states = _scan_forward(x, kernel, bias, u, h0, mask, activation, chunk)
        return states[-1] if last_only else states

    @ops.custom_gradient
    def recurrence(x, kernel, bias, u, h0):
        states = _scan_forward(x, kernel, bias, u, h0, mask, activation, chunk)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            grad_states, grad_last = (None, upstream) if last_only else (upstream, None)
            return _scan_backward(
                grad_states, grad_last, states, x, kernel, u, h0, mask, backward, chunk
            )

        return (states[-1] if last_only else states), grad

    return recurrence(x, kernel, bias, u, h0)


def _padded_recurrence(x, kernel, bias, u, h0, mask, activation, last_only):
    steps = ops.shape(x)[0]
    padding = (-steps) % _PAD_CHUNK
    pad_shape = (padding,) + tuple(ops.shape(x)[1:-1])
    x = ops.concatenate([x, ops.zeros(pad_shape + (ops.shape(x)[-1],), x.dtype)], axis=0)
    if mask is None:
        mask = ops.ones(tuple(ops.shape(h0)[:1]) + (1,), "bool")
        mask = ops.broadcast_to(mask, (steps,) + tuple(ops.shape(mask)))
    mask = ops.concatenate([mask, ops.zeros(pad_shape + (1,), "bool")], axis=0)
    states = ind_recurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, chunk=_PAD_CHUNK
    )
    return states if last_only else states[:steps]


@keras_gradkit_export
class IndRNN(keras.layers.RNN):
    """Fast IndRNN layer: batched input projections, then the elementwise
    recurrence with a hand-written backward pass.

    Computes exactly what `keras.layers.RNN(keras_gradkit.layers.IndRNNCell(...))`
    computes (same weights, same order, so `set_weights` works both ways),
    with masking, `initial_state`, `return_state`, `stateful` and
    `go_backwards`, and works inside `keras.layers.Bidirectional`.

    Equation: `h_t = activation(x_t @ kernel + recurrent_kernel * h_{t-1} + bias)`,
    `|recurrent_kernel| <= bound` projected after every optimizer update.

    Args:
        units, activation, use_bias, kernel_initializer, recurrent_initializer,
        bias_initializer, recurrent_max_abs, timesteps, kernel_regularizer,
        recurrent_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint, dropout, seed: as in
        `keras_gradkit.layers.IndRNNCell`.
        return_sequences: bool, return the whole sequence of outputs instead
            of the last one. Defaults to `False`.
        return_state: bool, also return the last state. Defaults to `False`.
        go_backwards: bool, process the sequence backwards (outputs are in the
            order processed, as in Keras). Defaults to `False`.
        stateful: bool, carry the last state of batch i into batch i + 1.
            Defaults to `False`.

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
    >>> layer = keras_gradkit.layers.IndRNN(16, timesteps=50)
    >>> layer(np.ones((4, 50, 2), "float32")).shape
    (4, 16)

    References:
        Li et al., [Independently Recurrent Neural Network (IndRNN): Building
        A Longer and Deeper RNN](https://arxiv.org/abs/1803.04831), 2018.
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
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        **kwargs,
    ):
        if kwargs.pop("unroll", False):
            raise ValueError(
                "IndRNN does not support `unroll=True`: its loop is already "
                "chunked. Use `keras.layers.RNN(IndRNNCell(...), unroll=True)` "
                "instead. Received: unroll=True"
            )
        cell = IndRNNCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            recurrent_max_abs=recurrent_max_abs,
            timesteps=timesteps,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            seed=seed,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="ind_rnn_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            **kwargs,
        )

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                "IndRNN expects inputs of rank 3 (batch, timesteps, features). "
                f"Received: input shape={tuple(sequences_shape)}"
            )
        super().build(sequences_shape, initial_state_shape)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        if training and cell.dropout > 0:
            dropout_mask = cell.get_dropout_mask(sequences[:, 0])
            sequences = sequences * ops.expand_dims(dropout_mask, 1)
        x = ops.transpose(sequences, (1, 0, 2))
        step_mask = None
        if mask is not None:
            step_mask = ops.expand_dims(ops.transpose(ops.cast(mask, "bool")), -1)
        if self.go_backwards:
            x = ops.flip(x, axis=0)
            step_mask = None if step_mask is None else ops.flip(step_mask, axis=0)
        # Tensors, not variables: the custom gradient must not capture them.
        kernel = ops.copy(cell.kernel)
        bias = ops.copy(cell.bias) if cell.use_bias else ops.zeros((cell.units,), kernel.dtype)
        u = ops.copy(cell.recurrent_kernel)
        states = ind_recurrence(
            x, kernel, bias, u, h0, step_mask, cell.activation,
            last_only=not self.return_sequences,
        )
        return self._outputs(states, step_mask)

    def _outputs(self, states, step_mask):
        """Keras's conventions for masked steps: the output repeats the last
        unmasked output (zeros before the first one), or is zero with
        `zero_output_for_mask=True`; the state is carried through.

        `states` holds every state with `return_sequences=True`, else only
        the last one."""
        if self.return_sequences:
            last_state = states[-1]
            keep = None if step_mask is None else self._kept_outputs(step_mask)
            outputs = states if keep is None else ops.where(keep, states, ops.zeros_like(states))
            last_output = outputs[-1]
            return last_output, ops.transpose(outputs, (1, 0, 2)), [last_state]
        last_state = last_output = states
        if step_mask is not None:
            keep = self._kept_outputs(step_mask)[-1]
            last_output = ops.where(keep, last_state, ops.zeros_like(last_state))
        return last_output, ops.expand_dims(last_output, 1), [last_state]

    def _kept_outputs(self, step_mask):
        if self.zero_output_for_mask:
            return step_mask
        return ops.cumsum(ops.cast(step_mask, "int32"), axis=0) > 0

    @property
    def units(self):
        return self.cell.units

    def get_config(self):
        config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        base = super().get_config()
        del base["cell"]
        return {**base, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
