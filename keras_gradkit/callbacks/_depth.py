"""The gradient across depth: one norm per layer (private).

For the model's top-level layers in order (a nested block counts as one
layer), the L2 norm of the applied gradient of the layer's trainable
variables taken together. Layers without trainable variables have none.
"""

import numpy as np

from keras_gradkit.callbacks import _plots

PLUGIN = "keras_gradkit_gradient_depth"
DESCRIPTION = (
    "L2 norm of the applied gradient of each layer's trainable variables, first layer first."
)


def layer_gradient_norms(model, gradients):
    """`(names, norms)` of the layers that have trainable variables.

    Args:
        model: a Keras model.
        gradients: `{variable.path: numpy array}`, the applied gradients.
    """
    names, norms = [], []
    for layer in getattr(model, "layers", []):
        parts = [gradients[v.path] for v in layer.trainable_variables if v.path in gradients]
        if not parts:
            continue
        names.append(layer.name)
        norms.append(float(np.sqrt(sum(np.sum(np.square(p.astype("float64"))) for p in parts))))
    return names, norms


def first_to_last(norms):
    """Norm of the first layer over norm of the last (NaN when undefined)."""
    if not norms or norms[-1] == 0:
        return float("nan") if not norms or norms[0] == 0 else float("inf")
    return norms[0] / norms[-1]


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
