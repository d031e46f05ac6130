"""keras_gradkit: train deep and long recurrent networks in Keras 3 without
vanishing or exploding gradients, and see the gradients while they train."""

from keras_gradkit import constraints
from keras_gradkit import initializers
from keras_gradkit import layers

__version__ = "0.1.0"
