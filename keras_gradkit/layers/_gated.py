"""What `keras_gradkit.layers.LSTM` and `GRU` and their cells share (private).

Each of them is Keras's class with Keras's constructor and `build`; what it
adds are checks Keras leaves out and its gate-bias arguments, which it keeps as
attributes and config entries and hands to Keras's constructor as the bias
initializer they describe (a `GateBias` or `Chrono`). Keras's `build` then
creates the bias from it, as it does from its own `unit_forget_bias`.
"""

import keras

from keras_gradkit import _validation
from keras_gradkit import initializers as gk_initializers

# The gate arguments of each layout and their defaults, in the order in which
# the errors name them.
GATE_DEFAULTS = {
    "lstm": {"forget_bias": 1.0, "input_bias": 0.0, "cell_bias": 0.0, "output_bias": 0.0},
    "gru": {"update_bias": 0.0, "reset_bias": 0.0, "candidate_bias": 0.0},
}


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


def _check_gate_arguments(
    gate_args, defaults, chrono_timesteps, unit_forget_bias, bias_initializer
):
    """Checks a cell's gate-bias arguments; raises when two sources of the
    bias are given, so that neither silently wins.

    `gate_args` maps argument names (`forget_bias`, ...) to values and
    `defaults` to their defaults. A gate value counts as given when it differs
    from its default.
    """
    for name, value in gate_args.items():
        _validation.finite_float(name, value)
    _validation.float_at_least("chrono_timesteps", chrono_timesteps, 2, allow_none=True)
    _validation.optional_bool("unit_forget_bias", unit_forget_bias)
    given = [f"{n}={v!r}" for n, v in gate_args.items() if v != defaults[n]]
    if chrono_timesteps is not None and given:
        raise ValueError(
            f"Argument `chrono_timesteps` replaces the constant gate biases, so it cannot be combined with "
            f"{', '.join(given)}. Received: chrono_timesteps={chrono_timesteps!r}. Pass one or the other."
        )
    if chrono_timesteps is not None:
        given = [f"chrono_timesteps={chrono_timesteps!r}"]
    keras_style = []
    if unit_forget_bias is not None:
        keras_style.append(f"unit_forget_bias={unit_forget_bias!r}")
    if bias_initializer is not None:
        keras_style.append(f"bias_initializer={bias_initializer!r}")
    if given and keras_style:
        raise ValueError(
            f"The gate bias is given twice: by {', '.join(given)} and by {', '.join(keras_style)}. "
            "Use the gate arguments alone, or leave them at their defaults and use Keras's "
            "`unit_forget_bias`/`bias_initializer`."
        )


def keras_bias_arguments(
    layout,
    gates,
    chrono_timesteps,
    bias_initializer,
    unit_forget_bias=None,
    reset_after=True,
    seed=None,
):
    """Checks the bias arguments of a cell or layer and returns the ones for
    Keras's constructor.

    `gates` maps the gate arguments (`forget_bias=...`) to their values;
    `unit_forget_bias` is the LSTM's, `reset_after` the GRU's. Given Keras's
    own `bias_initializer` or `unit_forget_bias`, the bias is Keras's, with
    Keras's defaults; otherwise the returned `bias_initializer` is the
    `Chrono` (with `chrono_timesteps`) or `GateBias` initializer of the whole
    bias, and the LSTM's `unit_forget_bias` is False.
    """
    _check_gate_arguments(
        gates, GATE_DEFAULTS[layout], chrono_timesteps, unit_forget_bias, bias_initializer
    )
    if bias_initializer is not None or unit_forget_bias is not None:
        initializer = "zeros" if bias_initializer is None else bias_initializer
        forget_ones = True if unit_forget_bias is None else unit_forget_bias
    elif chrono_timesteps is not None:
        initializer = gk_initializers.Chrono(
            chrono_timesteps, layout=layout, reset_after=reset_after, seed=seed
        )
        forget_ones = False  # the initializer gives the whole bias, forget gate included
    else:
        values = {name[: -len("_bias")]: value for name, value in gates.items()}
        initializer = gk_initializers.GateBias(layout, reset_after=reset_after, **values)
        forget_ones = False
    if layout == "lstm":
        return {"bias_initializer": initializer, "unit_forget_bias": forget_ones}
    return {"bias_initializer": initializer}


def keep_bias_arguments(layer, gates, chrono_timesteps, bias_initializer, unit_forget_bias=None):
    """Stores the gate arguments on `layer` (a cell or a layer) under their
    own names, and whether Keras's bias arguments were given, for `bias_config`.

    Keras's `bias_initializer` and `unit_forget_bias` attributes hold what its
    `build` uses, which `keras_bias_arguments` computed.
    """
    for name, value in gates.items():
        setattr(layer, name, float(value))
    layer.chrono_timesteps = chrono_timesteps
    layer._bias_initializer_given = bias_initializer is not None
    layer._unit_forget_bias_argument = unit_forget_bias


def bias_config(layer, layout):
    """The bias arguments of `layer` as given to its constructor, for
    `get_config`: the user's `bias_initializer` (None when not given), the
    LSTM's `unit_forget_bias`, the gate arguments and `chrono_timesteps`."""
    given = layer._bias_initializer_given
    config = {
        "bias_initializer": (
            keras.initializers.serialize(layer.bias_initializer) if given else None
        ),
        **{name: getattr(layer, name) for name in GATE_DEFAULTS[layout]},
        "chrono_timesteps": layer.chrono_timesteps,
    }
    if layout == "lstm":
        config["unit_forget_bias"] = layer._unit_forget_bias_argument
    return config
