"""keras_gradkit: train deep and long recurrent networks in Keras 3 without
vanishing or exploding gradients, and see the gradients while they train."""

import importlib

from keras_gradkit import clipping, constraints, diagnostics, initializers, layers, optimizers
from keras_gradkit.diagnostics import diagnose

__version__ = "0.1.0"


def __getattr__(name):
    # `keras_gradkit.callbacks` (TensorBoard, matplotlib) is imported on first
    # use only: nothing else in the package depends on it.
    if name == "callbacks":
        return importlib.import_module("keras_gradkit.callbacks")
    raise AttributeError(f"module 'keras_gradkit' has no attribute {name!r}")
