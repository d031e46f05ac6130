"""Gate-bias initializers for Keras's LSTM and GRU bias layouts.

`GateBias` fills each gate's slice of the bias with a constant (a forget-gate
bias of 1, Gers et al. 2000; Jozefowicz et al. 2015); `Chrono` draws the
forget (LSTM) or update (GRU) bias from the chrono distribution of Tallec &
Ollivier 2018. Both return the complete bias in Keras's gate order, so they can
be passed as `bias_initializer` to `keras.layers.LSTM` or `keras.layers.GRU`.
"""

import random as python_random

import keras

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export

LAYOUTS = ("lstm", "gru")
# Keras's gate order inside the bias vector of each layout.
GATES = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("update", "reset", "candidate"),
}


def _check_layout(layout, reset_after):
    _validation.one_of("layout", layout, LAYOUTS)
    _validation.bool_arg("reset_after", reset_after)
    if layout == "lstm" and not reset_after:
        raise ValueError(
            "Argument `reset_after` only applies to `layout='gru'`; the LSTM bias "
            "has a single row. Received: layout='lstm', reset_after=False"
        )


def _units_from_shape(shape, layout, reset_after):
    """The number of units a bias of `shape` holds; raises if the shape is not
    Keras's bias shape for the layout."""
    shape = tuple(shape)
    num_gates = len(GATES[layout])
    expected_rank = 2 if (layout == "gru" and reset_after) else 1
    ok = (
        len(shape) == expected_rank
        and shape[-1] is not None
        and shape[-1] > 0
        and shape[-1] % num_gates == 0
    )
    if ok and expected_rank == 2:
        ok = shape[0] == 2
    if not ok:
        form = "(2, 3 * units)" if expected_rank == 2 else f"({num_gates} * units,)"
        raise ValueError(
            f"The bias for layout={layout!r}, reset_after={reset_after} must have shape "
            f"{form}. Received: shape={shape}"
        )
    return shape[-1] // num_gates


def _assemble(gate_rows, units, layout, reset_after, dtype):
    """Concatenates per-gate `(units,)` tensors in Keras's order; for the GRU
    with `reset_after=True` adds the zero recurrent row."""
    row = keras.ops.concatenate(
        [keras.ops.cast(gate_rows[g], dtype) for g in GATES[layout]], axis=0
    )
    if layout == "gru" and reset_after:
        row = keras.ops.stack([row, keras.ops.zeros((3 * units,), dtype=dtype)], axis=0)
    return row


@keras_gradkit_export
class GateBias(keras.initializers.Initializer):
    """Constant per-gate bias in Keras's LSTM or GRU gate order.

    Use it to choose the starting value of each gate: a forget-gate bias of 1
    (or more) makes an LSTM remember from the first step, and a positive GRU
    update bias makes a GRU keep its state. Gates not named start at 0.

    The bias is `[b_i, b_f, b_c, b_o]` of shape `(4 * units,)` for the LSTM and
    `[b_z, b_r, b_h]` for the GRU: of shape `(3 * units,)` with
    `reset_after=False`, or `(2, 3 * units)` with `reset_after=True`, where the
    gate values go in the input row and the recurrent row is zero (Keras adds
    the two rows).

    Args:
        layout: str, `"lstm"` (gates `input, forget, cell, output`) or `"gru"`
            (gates `update, reset, candidate`). Defaults to `"lstm"`.
        reset_after: bool, the GRU convention of the layer the bias is for;
            `True` gives the `(2, 3 * units)` bias. Only for `layout="gru"`.
            Defaults to `True`.
        **gate_values: float, the bias of each named gate, e.g. `forget=1.0`.
            Gates not named are 0.

    Returns:
        A tensor of the requested shape when called with `(shape, dtype)`.

    Example:

    >>> import keras, keras_gradkit
    >>> init = keras_gradkit.initializers.GateBias("lstm", forget=1.0)
    >>> keras.ops.convert_to_numpy(init((4 * 3,))).tolist()  # gates i, f, c, o
    [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    >>> layer = keras.layers.LSTM(3, unit_forget_bias=False, bias_initializer=init)

    References:
        Gers et al., [Learning to Forget: Continual Prediction with LSTM](
        https://doi.org/10.1162/089976600300015015), 2000.
        Jozefowicz et al., [An Empirical Exploration of Recurrent Network
        Architectures](https://proceedings.mlr.press/v37/jozefowicz15.html), 2015.
    """

    def __init__(self, layout="lstm", reset_after=True, **gate_values):
        _check_layout(layout, reset_after)
        allowed = GATES[layout]
        unknown = sorted(set(gate_values) - set(allowed))
        if unknown:
            hints = [
                f"{g!r} (layout={other!r})"
                for g in unknown
                for other in LAYOUTS
                if g in GATES[other]
            ]
            raise ValueError(
                f"Unknown gate name(s) {unknown} for layout={layout!r}; its gates are {list(allowed)}."
                + (f" Gate(s) of another layout: {', '.join(hints)}." if hints else "")
            )
        self.layout = layout
        self.reset_after = reset_after
        self.gate_values = {
            g: _validation.finite_float(g, gate_values.get(g, 0.0)) for g in allowed
        }

    def __call__(self, shape, dtype=None):
        dtype = dtype or keras.config.floatx()
        units = _units_from_shape(shape, self.layout, self.reset_after)
        rows = {g: keras.ops.full((units,), v, dtype=dtype) for g, v in self.gate_values.items()}
        return _assemble(rows, units, self.layout, self.reset_after, dtype)

    def get_config(self):
        return {"layout": self.layout, "reset_after": self.reset_after, **self.gate_values}


@keras_gradkit_export
class Chrono(keras.initializers.Initializer):
    """Chrono initialization of the LSTM or GRU gate biases.

    Use it when the task needs memory over a known range of time steps: the
    gates then start with characteristic forgetting times spread up to
    `max_timesteps`, instead of the few steps a zero bias gives.

    LSTM: `b_f ~ log(U[1, max_timesteps - 1])`, `b_i = -b_f`, `b_c = b_o = 0`.
    GRU: `b_z ~ log(U[1, max_timesteps - 1])`, `b_r = b_h = 0`. Keras's GRU
    computes `h_t = z * h_{t-1} + (1 - z) * candidate`, so a large update bias
    keeps the state, the role of the forget gate in the paper. With
    `reset_after=True` the values go in the input row of the `(2, 3 * units)`
    bias and the recurrent row is zero.

    Args:
        max_timesteps: number >= 2, `T_max`, the longest dependency range
            expected (of the order of the sequence length).
        layout: str, `"lstm"` or `"gru"`. Defaults to `"lstm"`.
        reset_after: bool, the GRU convention; only for `layout="gru"`.
            Defaults to `True`.
        seed: int or `None`, the random seed. `None` draws a seed from Python's
            `random` (fixed by `keras.utils.set_random_seed`). An instance
            returns the same values each time it is called. Defaults to `None`.

    Returns:
        A tensor of the requested shape when called with `(shape, dtype)`.

    Example:

    >>> import keras, keras_gradkit
    >>> init = keras_gradkit.initializers.Chrono(100, layout="gru")
    >>> tuple(init((2, 3 * 8)).shape)
    (2, 24)
    >>> layer = keras.layers.GRU(8, bias_initializer=init)

    References:
        Tallec & Ollivier, [Can recurrent neural networks warp time?](
        https://arxiv.org/abs/1804.11188), 2018.
    """

    def __init__(self, max_timesteps, layout="lstm", reset_after=True, seed=None):
        _validation.float_at_least(
            "max_timesteps", max_timesteps, 2, hint="(the bias is log(U[1, max_timesteps - 1]))"
        )
        _check_layout(layout, reset_after)
        _validation.integer("seed", seed, allow_none=True)
        self.max_timesteps = max_timesteps
        self.layout = layout
        self.reset_after = reset_after
        self.seed = seed
        self._seed = seed if seed is not None else python_random.randint(1, int(1e9))

    def __call__(self, shape, dtype=None):
        dtype = dtype or keras.config.floatx()
        units = _units_from_shape(shape, self.layout, self.reset_after)
        # Drawn in float32 then cast, so float16 biases get the same values.
        uniform = keras.random.uniform(
            (units,), 1.0, float(self.max_timesteps) - 1.0, dtype="float32", seed=self._seed
        )
        memory = keras.ops.log(uniform)
        zeros = keras.ops.zeros((units,), dtype="float32")
        if self.layout == "lstm":
            rows = {"input": -memory, "forget": memory, "cell": zeros, "output": zeros}
        else:
            rows = {"update": memory, "reset": zeros, "candidate": zeros}
        return _assemble(rows, units, self.layout, self.reset_after, dtype)

    def get_config(self):
        return {
            "max_timesteps": self.max_timesteps,
            "layout": self.layout,
            "reset_after": self.reset_after,
            "seed": self.seed,
        }
