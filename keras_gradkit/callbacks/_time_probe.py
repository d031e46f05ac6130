"""The time-gradient picture of `GradientBoard` (private); the measure is
`keras_gradkit.diagnostics._time`."""

import numpy as np

from keras_gradkit.callbacks import _plots
from keras_gradkit.diagnostics._time import reach


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
