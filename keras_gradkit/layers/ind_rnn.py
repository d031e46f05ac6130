"""IndRNN: the independently recurrent cell and its fast layer."""

import keras
from keras import ops

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.backend.common.ind_loops import IndRecurrence, clip_gradient

# The mark `keras.layers.RNN` looks for to create a cell's dropout masks
# before its loop and forget them after the call (see `backend/keras_private.py`).
from keras_gradkit.backend.keras_private import DropoutRNNCell
from keras_gradkit.constraints import MaxAbs
from keras_gradkit.layers._ind_recurrence import ind_recurrence, masked_output_repeats_state


def _validate_cell_arguments(units, recurrent_max_abs, timesteps, dropout, grad_clipping=None):
    _validation.positive_int("units", units)
    _validation.positive_float(
        "grad_clipping",
        grad_clipping,
        allow_none=True,
        hint="(it bounds the gradient w.r.t. each step's pre-activation)",
    )
    _validation.positive_float(
        "recurrent_max_abs",
        recurrent_max_abs,
        allow_none=True,
        hint="(it bounds |recurrent_kernel|)",
    )
    _validation.positive_int("timesteps", timesteps, allow_none=True)
    _validation.fraction("dropout", dropout)


def _check_without_kernel(kernel_initializer, kernel_regularizer, kernel_constraint):
    """`use_kernel=False` leaves no input kernel to initialize, regularize or
    constrain: a `kernel_*` argument then is a mistake, not a no-op."""
    for name, value, default in (
        ("kernel_initializer", kernel_initializer, (None, "glorot_uniform")),
        ("kernel_regularizer", kernel_regularizer, (None,)),
        ("kernel_constraint", kernel_constraint, (None,)),
    ):
        if value not in default:
            raise ValueError(
                f"With `use_kernel=False` the recurrence has no input kernel, so "
                f"`{name}` has nothing to act on; drop it, or put it on the layer "
                f"that projects the input. Received: {name}={value!r}"
            )


def _serialize_or_none(serialize, value):
    return None if value is None else serialize(value)


def recurrent_bound(recurrent_max_abs=None, timesteps=None):
    """The IndRNN bound on `|recurrent_kernel|`: `recurrent_max_abs` if given,
    else `2 ** (1 / timesteps)` if `timesteps` is given, else None (no bound)."""
    if recurrent_max_abs is not None:
        return float(recurrent_max_abs)
    if timesteps is not None:
        return 2.0 ** (1.0 / timesteps)
    return None


def ind_rnn_arguments(layer):
    """The serialized IndRNN arguments of `layer` (an `IndRNNCell`, or a layer
    that takes the same arguments, such as `ResidualIndRNN`), for `get_config`."""
    return {
        "units": layer.units,
        "activation": keras.activations.serialize(layer.activation),
        "use_bias": layer.use_bias,
        "kernel_initializer": _serialize_or_none(
            keras.initializers.serialize, layer.kernel_initializer
        ),
        "recurrent_initializer": _serialize_or_none(
            keras.initializers.serialize, layer.recurrent_initializer
        ),
        "bias_initializer": keras.initializers.serialize(layer.bias_initializer),
        "recurrent_max_abs": layer.recurrent_max_abs,
        "timesteps": layer.timesteps,
        "kernel_regularizer": keras.regularizers.serialize(layer.kernel_regularizer),
        "recurrent_regularizer": keras.regularizers.serialize(layer.recurrent_regularizer),
        "bias_regularizer": keras.regularizers.serialize(layer.bias_regularizer),
        "kernel_constraint": keras.constraints.serialize(layer.kernel_constraint),
        "bias_constraint": keras.constraints.serialize(layer.bias_constraint),
        "dropout": layer.dropout,
        "seed": layer.seed,
    }


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
    with `recurrent_kernel` a vector of shape `(units,)`; with
    `use_kernel=False`, the recurrence alone,
    `h_t = activation(x_t + recurrent_kernel * h_{t-1} + bias)` (the official
    code's `IndRNN_onlyrecurrent`, after any projection of the input).

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
        use_kernel: bool, whether the input passes through an input kernel.
            With `False` the cell is the recurrence alone: the input width
            must equal `units`, and `kernel_initializer`,
            `kernel_regularizer` and `kernel_constraint` are refused.
            Defaults to `True`.
        grad_clipping: positive float or None. During backpropagation
            through time, the gradient with respect to each step's
            pre-activation is clipped elementwise to
            `[-grad_clipping, grad_clipping]` before it flows into the
            weights and the step before, as Lasagne's `grad_clipping` (used
            with 10 by the official IndRNN adding-problem code); the forward
            pass is unchanged. Unlike clipping the final gradient, it bounds
            what each step passes back. Defaults to `None`.

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
    >>> tuple(rnn(np.ones((2, 20, 3), "float32")).shape)
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
        use_kernel=True,
        grad_clipping=None,
        **kwargs,
    ):
        _validate_cell_arguments(units, recurrent_max_abs, timesteps, dropout, grad_clipping)
        _validation.bool_arg("use_bias", use_bias)
        _validation.bool_arg("use_kernel", use_kernel)
        if not use_kernel:
            _check_without_kernel(kernel_initializer, kernel_regularizer, kernel_constraint)
            kernel_initializer = None
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.use_kernel = use_kernel
        self.kernel_initializer = (
            None if kernel_initializer is None else keras.initializers.get(kernel_initializer)
        )
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
        self.grad_clipping = None if grad_clipping is None else float(grad_clipping)
        self.recurrent_dropout = 0.0  # as Keras's cells have it; IndRNN has none
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self._dropout_mask = None
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
        if self.use_kernel:
            self.kernel = self.add_weight(
                shape=(input_dim, self.units),
                name="kernel",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        elif input_dim != self.units:
            raise ValueError(
                "With `use_kernel=False` the input is added to the state as it "
                f"is, so its width must equal `units`. Received: input width="
                f"{input_dim} (input_shape={tuple(input_shape)}), units={self.units}. "
                f"Project it first, e.g. with `keras.layers.Dense({self.units})`."
            )
        else:
            self.kernel = None
        bound = self.bound
        self.recurrent_kernel = self.add_weight(
            shape=(self.units,),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer or self._default_recurrent_initializer(),
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
        projected = sequence if self.kernel is None else ops.matmul(sequence, self.kernel)
        pre = projected + self.recurrent_kernel * h_prev
        if self.use_bias:
            pre = pre + self.bias
        h = self.activation(clip_gradient(pre, self.grad_clipping))
        return h, ([h] if nested else h)

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    # One input dropout mask per sequence, shared by its time steps:
    # `keras.layers.RNN` asks for the masks before its loop (so the loop draws
    # no random numbers, which JAX's `lax.scan` requires) and resets them
    # after each call; `IndRNN.inner_loop` reads the same mask.
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
        """None: IndRNN has no recurrent dropout."""
        del step_input
        return None

    def reset_dropout_mask(self):
        """Forgets the input dropout mask, so the next call draws a new one."""
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self):
        """Nothing to forget: IndRNN has no recurrent dropout."""

    def get_config(self):
        config = {
            **ind_rnn_arguments(self),
            "use_kernel": self.use_kernel,
            "grad_clipping": self.grad_clipping,
        }
        return {**super().get_config(), **config}


@keras_gradkit_export
class IndRNN(keras.layers.RNN):
    """Fast IndRNN layer: the elementwise recurrence run by the engine that is
    fastest on each backend (a hand-written backward pass on TensorFlow,
    compiled by XLA in training, and on PyTorch; `lax.scan` on JAX).

    Computes exactly what `keras.layers.RNN(keras_gradkit.layers.IndRNNCell(...))`
    computes (same weights, same order, so `set_weights` works both ways),
    with masking, `initial_state`, `return_state`, `stateful` and
    `go_backwards`, and works inside `keras.layers.Bidirectional`.

    Equation: `h_t = activation(x_t @ kernel + recurrent_kernel * h_{t-1} + bias)`,
    `|recurrent_kernel| <= bound` projected after every optimizer update.

    Args:
        units: as in `keras_gradkit.layers.IndRNNCell`, and so are
            `activation`, `use_bias`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `recurrent_max_abs`,
            `timesteps`, `kernel_regularizer`, `recurrent_regularizer`,
            `bias_regularizer`, `kernel_constraint`, `bias_constraint`,
            `dropout`, `seed`, `use_kernel` and `grad_clipping` (clipped
            inside the backward pass of every engine).
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
        training: bool, whether dropout is applied. On TensorFlow, training
            also compiles the recurrence with XLA (inference does not, so a
            SavedModel serves without XLA).

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with
        `return_sequences=True`; with `return_state=True`, a list of the
        output and the last state.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.IndRNN(16, timesteps=50)
    >>> tuple(layer(np.ones((4, 50, 2), "float32")).shape)
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
        use_kernel=True,
        grad_clipping=None,
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
            use_kernel=use_kernel,
            grad_clipping=grad_clipping,
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
        kernel = None if cell.kernel is None else ops.copy(cell.kernel)
        u = ops.copy(cell.recurrent_kernel)
        bias = ops.copy(cell.bias) if cell.use_bias else ops.zeros((cell.units,), u.dtype)
        recurrence = IndRecurrence(
            x,
            kernel,
            bias,
            u,
            h0,
            mask=step_mask,
            activation=cell.activation,
            last_only=not self.return_sequences,
            grad_clipping=cell.grad_clipping,
        )
        states = ind_recurrence(recurrence, training=training)
        return self._outputs(states, step_mask)

    def _outputs(self, states, step_mask):
        """Keras's conventions for masked steps: the output repeats the last
        unmasked output (before the first one: zeros, or the initial state
        where the backend's Keras does so), or is zero with
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
        keep = None if step_mask is None else self._kept_outputs(step_mask)
        if keep is not None:
            last_output = ops.where(keep[-1], last_state, ops.zeros_like(last_state))
        return last_output, ops.expand_dims(last_output, 1), [last_state]

    def _kept_outputs(self, step_mask):
        if self.zero_output_for_mask:
            return step_mask
        if masked_output_repeats_state():
            return None  # the output of an IndRNN step is its state
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
