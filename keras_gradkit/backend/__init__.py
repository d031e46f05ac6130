"""Everything that depends on the Keras backend (private).

One package per backend, `keras_gradkit/backend/<name>/`, as Keras keeps its
own kernels in `keras/src/backend/<name>/`. The backend is chosen once, here;
the rest of the package asks `get(module)` for the running backend's version
of a module and never asks which backend it runs on.
"""

import importlib

import keras

NAME = keras.backend.backend()
_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


# {module name: module}, filled by `get` (a recorded PyTorch step asks many times).
_loaded = {}


def get(module):
    """The running backend's `keras_gradkit.backend.<name>.<module>`."""
    found = _loaded.get(module)
    if found is not None:
        return found
    package = _PACKAGES.get(NAME)
    if package is None:
        raise NotImplementedError(f"keras_gradkit does not support the {NAME!r} Keras backend.")
    found = _loaded[module] = importlib.import_module(f"keras_gradkit.backend.{package}.{module}")
    return found
