"""Callbacks (`keras_gradkit.callbacks`): `GradientBoard` writes gradient
histograms, norms, clipping statistics and gradient flow through time for
TensorBoard. Imported lazily by `keras_gradkit` (it needs TensorBoard's
summary ops and, for plots, matplotlib)."""

from keras_gradkit.callbacks.gradient_board import GradientBoard

__all__ = ["GradientBoard"]
