"""PNG pictures for TensorBoard's Images tab (private; matplotlib's Agg canvas,
no display needed)."""

import io

import numpy as np


def figure_png(draw, title, size=(6.4, 3.6), dpi=100):
    """Draws with `draw(ax)` on a log-scale y axis; returns `(png_bytes, width, height)`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    draw(ax)
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    width, height = (int(round(v)) for v in fig.get_size_inches() * dpi)
    return buffer.getvalue(), width, height


def mark_zeros(ax, x, values):
    """Exact zeros (underflow) have no place on a log axis: tick them at the bottom."""
    values = np.asarray(values, dtype="float64")
    positive = values > 0
    if positive.all():
        return
    floor = values[positive].min() if positive.any() else 1.0
    ax.plot(
        np.asarray(x)[~positive],
        np.full((~positive).sum(), floor),
        "|",
        color="tab:gray",
        ms=6,
        label=f"exactly 0 at {(~positive).sum()} points",
    )
