"""The gradient-across-depth picture of `GradientBoard` (private); the
measure is `keras_gradkit.diagnostics.depth`."""

import numpy as np

from keras_gradkit.callbacks import _plots
from keras_gradkit.diagnostics.depth import first_to_last


def plot_png(names, norms, title):
    """`(png_bytes, width, height)`: norm against layer depth, log scale, first layer on the left."""
    norms = np.asarray(norms, dtype="float64")
    depth = np.arange(1, norms.size + 1)

    def draw(ax):
        positive = norms > 0
        ax.plot(depth[positive], norms[positive], "o-", lw=1.2, ms=4)
        _plots.mark_zeros(ax, depth, norms)
        ax.set_xlabel("layer depth (1 = first layer)")
        ax.set_ylabel("|applied gradient| of the layer")
        if norms.size <= 16:
            ax.set_xticks(depth)
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)

    ratio = first_to_last(list(norms))
    return _plots.figure_png(draw, f"{title}: gradient across depth\nfirst / last = {ratio:.3g}")
