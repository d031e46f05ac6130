"""`GradientBoard`'s time probe (private): the check of its `time_probe`
argument and the time-gradient picture; the measure is
`keras_gradkit.diagnostics.time_probe`."""

import keras
import numpy as np

from keras_gradkit.callbacks import _plots
from keras_gradkit.diagnostics.time_probe import reach

_SHAPES = "float sequences of shape (batch, timesteps, features) or integer token ids of shape (batch, timesteps)"


def plot_png(norms, title):
    """`(png_bytes, width, height)`: `norms` against the time step, log-scale y axis.

    NaN entries (steps masked in every sequence) are left blank."""
    norms = np.asarray(norms, dtype="float64")
    r = reach(norms)
    measured = ~np.isnan(norms)

    def draw(ax):
        steps = np.arange(norms.size)
        positive = measured & (norms > 0)
        ax.plot(steps[positive], norms[positive], lw=1.2)
        _plots.mark_zeros(ax, steps[measured], norms[measured])
        ax.set_xlim(0, max(norms.size - 1, 1))
        ax.set_xlabel("time step t")
        ax.set_ylabel("mean |d loss / d x_t|")
        if measured.any() and r < measured.sum():
            first = np.flatnonzero(measured)[-r] if r else norms.size
            ax.axvline(first - 0.5, color="tab:red", ls="--", lw=1, label=f"reach = {r} steps")

    masked = "" if measured.all() else f" ({norms.size - measured.sum()} masked)"
    return _plots.figure_png(draw, f"{title}\nreach {r} of {measured.sum()} steps{masked}")


def validate_time_probe(time_probe):
    """Checks the `time_probe` argument of `GradientBoard`.

    Args:
        time_probe: None, or a tuple `(x, y)`: `x` float sequences of shape
            `(batch, timesteps, features)` or integer token ids of shape
            `(batch, timesteps)`; `y` their targets (an array or a structure
            of arrays), each with `batch` rows.

    Returns:
        None, or `(x, y)` as NumPy arrays (`y` keeps its structure).

    Raises:
        TypeError: `time_probe` is not a tuple or list, or `x` is not an array.
        ValueError: `x` is neither of the two kinds above (an image batch, a
            float matrix, integer sequences with features), it is empty, or
            `y` has a different number of rows.
    """
    if time_probe is None:
        return None
    if not isinstance(time_probe, (tuple, list)):
        raise TypeError(
            "Argument `time_probe` must be None or a tuple `(x, y)` of a small batch of sequences and their "
            f"targets. Received: time_probe of type {type(time_probe).__name__}{_shape_note(time_probe)}"
        )
    if len(time_probe) != 2:
        raise ValueError(
            "Argument `time_probe` must be None or a tuple `(x, y)` of a small batch of sequences and their "
            f"targets. Received: time_probe with {len(time_probe)} entries"
        )
    x, y = time_probe
    x = np.asarray(x)
    if x.dtype == object:
        raise TypeError(
            f"Argument `time_probe` must hold {_SHAPES}. Received: time_probe[0] of type {type(x).__name__}"
        )
    dtype = keras.backend.standardize_dtype(x.dtype)
    kind = (
        "float"
        if keras.backend.is_float_dtype(dtype)
        else "int"
        if keras.backend.is_int_dtype(dtype)
        else None
    )
    if (kind, x.ndim) not in (("float", 3), ("int", 2)) or x.shape[0] == 0:
        hint = " (cast token ids to an integer dtype)" if (kind, x.ndim) == ("float", 2) else ""
        raise ValueError(
            f"Argument `time_probe` must hold {_SHAPES}{hint}. "
            f"Received: time_probe[0] with shape={x.shape} and dtype={dtype}"
        )
    y = keras.tree.map_structure(np.asarray, y)
    rows = {a.shape[0] for a in keras.tree.flatten(y) if a.ndim}
    if rows - {x.shape[0]}:
        shapes = [a.shape for a in keras.tree.flatten(y)]
        raise ValueError(
            "Argument `time_probe` must have as many targets as sequences. "
            f"Received: time_probe with x.shape={x.shape} and y shapes {shapes}"
        )
    return x, y


def _shape_note(value):
    shape = getattr(value, "shape", None)
    return "" if shape is None else f" with shape={tuple(shape)}"
