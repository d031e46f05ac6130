"""Several squared norms at once on TensorFlow (private): Keras ops, which the
traced step fuses."""

from keras_gradkit.backend.common.norms import keras_squared_norms as squared_norms

__all__ = ["squared_norms"]
