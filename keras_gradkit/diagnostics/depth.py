"""The gradient across depth: one norm per layer.

For the model's top-level layers in order (a nested block counts as one
layer), the L2 norm of the gradient of the layer's trainable
variables taken together. Layers without trainable variables have none.
"""

from keras_gradkit.backend.common import norms

PLUGIN = "keras_gradkit_gradient_depth"
DESCRIPTION = (
    "L2 norm of the applied gradient of each layer's trainable variables, first layer first."
)


def layer_gradient_norms(model, gradients):
    """`(names, norms)` of the layers that have trainable variables.

    Args:
        model: a Keras model.
        gradients: `{variable.path: numpy array}`, the gradients.
    """
    return layer_norms(
        model,
        {path: norms.host_norm(g) for path, g in gradients.items()},
    )


def layer_norms(model, variable_norms):
    """`(names, norms)` of the layers that have trainable variables, from
    the norms of their variables' gradients, `sqrt(sum of squares)`.

    Args:
        model: a Keras model.
        variable_norms: `{variable.path: float}`.
    """
    names, found = [], []
    for layer in getattr(model, "layers", []):
        parts = [
            variable_norms[v.path] for v in layer.trainable_variables if v.path in variable_norms
        ]
        if not parts:
            continue
        names.append(layer.name)
        found.append(norms.host_norm(parts))
    return names, found


def first_to_last(norms):
    """Norm of the first layer over norm of the last (NaN when undefined)."""
    if not norms or norms[-1] == 0:
        return float("nan") if not norms or norms[0] == 0 else float("inf")
    return norms[0] / norms[-1]
