"""PNG pictures for TensorBoard's Images tab (private; matplotlib's Agg canvas,
no display needed)."""

import io
import warnings

import numpy as np


def figure_png(draw, title, size=(6.4, 3.6), dpi=100, message=None):
    """Draws with `draw(ax)` on a log-scale y axis; returns `(png_bytes, width, height)`.

    With `message` (or when `draw` leaves no finite positive value to show
    on a log axis) the picture says so in words instead of plotting.
    matplotlib's warnings about what cannot be drawn are silenced: the
    picture itself says what is missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if message is None:
            draw(ax)
            if _has_positive_data(ax):
                ax.set_yscale("log")
                ax.grid(True, which="both", alpha=0.3)
            else:
                message = "nothing to plot: no finite positive value"
        if message is not None:
            ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
            ax.set_xticks([])
            ax.set_yticks([])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    width, height = (int(round(v)) for v in fig.get_size_inches() * dpi)
    return buffer.getvalue(), width, height


def _has_positive_data(ax):
    """Whether a finite positive y value was plotted (a log axis needs one);
    matplotlib's data limits leave out NaN and inf."""
    top = ax.dataLim.y1
    return bool(np.isfinite(top) and top > 0)


def mark_zeros(ax, x, values):
    """Exact zeros (underflow) have no place on a log axis: tick them at the bottom."""
    values = np.asarray(values, dtype="float64")
    zero = values == 0
    if not zero.any():
        return
    floor = _finite_positive(values, np.min)
    ax.plot(
        np.asarray(x)[zero],
        np.full(zero.sum(), floor),
        "|",
        color="tab:gray",
        ms=6,
        label=f"exactly 0 at {zero.sum()} points",
    )


def mark_non_finite(ax, x, values):
    """NaN and inf have no place on any axis: mark them at the top."""
    values = np.asarray(values, dtype="float64")
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    ax.plot(
        np.asarray(x)[bad],
        np.full(bad.sum(), _finite_positive(values, np.max)),
        "^",
        color="tab:red",
        ms=5,
        label=f"not finite at {bad.sum()} points",
    )


def _finite_positive(values, reduce):
    """`reduce` of the finite positive values, 1 when there is none."""
    found = values[np.isfinite(values) & (values > 0)]
    return float(reduce(found)) if found.size else 1.0
