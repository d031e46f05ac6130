"""Several squared norms, square roots or differences at once on JAX
(private): Keras ops, which the traced step fuses."""

from keras_gradkit.backend.common.norms import keras_differences as differences
from keras_gradkit.backend.common.norms import keras_sqrts as sqrts
from keras_gradkit.backend.common.norms import keras_squared_norms as squared_norms

__all__ = ["differences", "sqrts", "squared_norms"]
