"""What `keras_gradkit.layers.LSTM` and `GRU` and their cells share (private).

The cells hand Keras's cell constructor the bias initializer their gate
arguments ask for (a `GateBias` or `Chrono` instance), so Keras's own `build`
creates the weights. The layers call Keras's layer constructor, which builds a
`keras.layers.LSTMCell` (or `GRUCell`) of its own, and put the keras_gradkit
cell in its place before anything uses it (`install_cell`).
"""

import keras

from keras_gradkit import _validation
from keras_gradkit import backend as gk_backend
from keras_gradkit import initializers as gk_initializers

# The seed handed to the cell Keras's layer constructor builds and
# `install_cell` discards: any integer keeps its `SeedGenerator` from drawing a
# seed from Python's `random` (see `cell_arguments`).
_DISCARDED_CELL_SEED = 0


def check_cell_arguments(units, use_bias, dropout, recurrent_dropout):
    """Raises `TypeError`/`ValueError` naming the argument that Keras's cell
    would accept silently (Keras clips `dropout` into [0, 1])."""
    _validation.positive_int("units", units)
    _validation.bool_arg("use_bias", use_bias)
    _validation.fraction("dropout", dropout)
    _validation.fraction("recurrent_dropout", recurrent_dropout)


def check_use_cudnn(use_cudnn):
    _validation.one_of("use_cudnn", use_cudnn, ("auto", True, False))


def check_input_dim(input_shape):
    """Raises `ValueError` when the last axis of a cell's input is unknown,
    before Keras's `build` tries to create a kernel of unknown shape."""
    if input_shape[-1] is None:
        raise ValueError(
            f"The last axis of the input must be defined. Received: input_shape={tuple(input_shape)}"
        )


def gate_bias_initializer(layout, reset_after, gate_args, chrono_timesteps, seed):
    """The `Chrono` (when `chrono_timesteps` is set) or `GateBias` initializer
    of the bias the gate arguments ask for.

    `gate_args` maps the cell's gate arguments (`forget_bias=...`,
    `update_bias=...`) to their values; each names the gate before `_bias`.
    """
    if chrono_timesteps is not None:
        return gk_initializers.Chrono(
            chrono_timesteps, layout=layout, reset_after=reset_after, seed=seed
        )
    gate_values = {name[: -len("_bias")]: value for name, value in gate_args.items()}
    return gk_initializers.GateBias(layout, reset_after=reset_after, **gate_values)


def bias_config(cell, names, **extra):
    """The bias arguments of a gated cell as given to its constructor: the
    user's `bias_initializer` (None when not given), the gate arguments
    `names` read from the cell, and `extra`."""
    given = cell._bias_initializer_given
    config = {
        "bias_initializer": (
            keras.initializers.serialize(cell.bias_initializer) if given else None
        ),
        **extra,
    }
    config.update({name: getattr(cell, name) for name in names})
    return config


def cell_arguments(cell):
    """The arguments of `cell` for Keras's layer constructor to build its own
    cell from (the cell `install_cell` then replaces by `cell`).

    The initializers are `cell`'s objects, not names, and the seed is fixed:
    Keras's cell then draws no seed from Python's `random`, so that after
    `keras.utils.set_random_seed` the layers built after this one start from
    the weights they have after a `keras.layers.LSTM` or `GRU`. The layer's
    own seed, which its config reports, is `cell.seed`.
    """
    return {
        "activation": cell.activation,
        "recurrent_activation": cell.recurrent_activation,
        "use_bias": cell.use_bias,
        "kernel_initializer": cell.kernel_initializer,
        "recurrent_initializer": cell.recurrent_initializer,
        "bias_initializer": cell.bias_initializer,
        "kernel_regularizer": cell.kernel_regularizer,
        "recurrent_regularizer": cell.recurrent_regularizer,
        "bias_regularizer": cell.bias_regularizer,
        "kernel_constraint": cell.kernel_constraint,
        "recurrent_constraint": cell.recurrent_constraint,
        "bias_constraint": cell.bias_constraint,
        "dropout": cell.dropout,
        "recurrent_dropout": cell.recurrent_dropout,
        "seed": cell.seed if cell.seed is not None else _DISCARDED_CELL_SEED,
    }


def install_cell(layer, cell, reset_after=None):
    """Puts `cell` in the place of the cell Keras's layer constructor built
    from the same arguments, before the layer is built: `layer.cell` is then
    `cell`, and only `cell` is tracked (its weights, its saved state).

    `reset_after` is the GRU's argument (`None` for the LSTM), for the check of
    the cuDNN kernel.
    """
    keras_cell = layer.cell
    layer._tracker.untrack(keras_cell)  # Keras's layer tracking: drop the unused cell
    layer.cell = cell
    # Keras's constructor made the same decision for its own cell, whose
    # activations and `use_bias` are `cell`'s: this one is for the cell that runs.
    if gk_backend.get("rnn").cudnn_disables_jit(
        cell, layer.unroll, layer.use_cudnn, reset_after=reset_after
    ):
        layer.supports_jit = False
