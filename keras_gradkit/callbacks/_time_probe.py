"""`GradientBoard`'s time probe (private): the check of its `time_probe`
argument and the time-gradient picture; the measure is
`keras_gradkit.diagnostics.time_probe`."""

import keras
import numpy as np

from keras_gradkit.callbacks import _plots
from keras_gradkit.diagnostics.time_probe import brief_error, reach

_SHAPES = "float sequences of shape (batch, timesteps, features) or integer token ids of shape (batch, timesteps)"


def plot_png(norms, title):
    """`(png_bytes, width, height)`: `norms` against the time step, log-scale y axis.

    `norms` is the time probe's aligned profile: NaN entries (steps no
    sequence reaches, once each is aligned at its last unmasked step) are
    left blank, exact zeros ticked at the bottom and steps that are not
    finite marked at the top. When nothing can be plotted (every step NaN or
    inf, or every measured step zero) the picture says so in words."""
    norms = np.asarray(norms, dtype="float64")
    measured = ~np.isnan(norms)
    steps, values = np.arange(norms.size), norms[measured]
    message = _nothing_to_plot(values)
    if message is not None:
        return _plots.figure_png(None, title, message=message)
    r = reach(norms)

    def draw(ax):
        # Blank where a step is not finite or zero: the line breaks there.
        shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
        ax.plot(steps[measured], shown, lw=1.2, marker=".", ms=2)
        _plots.mark_zeros(ax, steps[measured], values)
        _plots.mark_non_finite(ax, steps[measured], values)
        ax.set_xlim(0, max(norms.size - 1, 1))
        ax.set_xlabel("time step t (each sequence aligned at its last unmasked step)")
        ax.set_ylabel("mean |d loss / d x_t|")
        if r < values.size:
            first = np.flatnonzero(measured)[-r] if r else norms.size
            ax.axvline(first - 0.5, color="tab:red", ls="--", lw=1, label=f"reach = {r} steps")

    notes = [f"{norms.size - values.size} masked"] if values.size < norms.size else []
    bad = int(np.sum(~np.isfinite(values)))
    notes += [f"{bad} not finite"] if bad else []
    notes = f" ({', '.join(notes)})" if notes else ""
    return _plots.figure_png(draw, f"{title}\nreach {r} of {values.size} steps{notes}")


def _nothing_to_plot(values):
    """What the picture says instead of a curve of the measured `values`, or None."""
    if values.size == 0:
        return "no gradient through time: every step is masked or NaN"
    if not np.isfinite(values).any():
        return "no finite gradient through time: every step is NaN or inf"
    if np.isfinite(values).all() and not values.any():
        return "the gradient through time is zero at every step"
    return None


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
            float matrix, integer sequences with features, a ragged list),
            it is empty, `y` is None or has a different number of rows.
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
    if y is None:
        raise ValueError(
            "Argument `time_probe` must be a tuple `(x, y)` with the targets `y` of the "
            "sequences: the probe differentiates the model's loss. Received: time_probe[1]=None"
        )
    try:
        x = np.asarray(x)
    except ValueError as e:  # a ragged list
        raise ValueError(
            f"Argument `time_probe` must hold {_SHAPES}: pad the sequences to one length. "
            f"Received: time_probe[0], a ragged {type(x).__name__} ({brief_error(e, 160)})"
        ) from e
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
