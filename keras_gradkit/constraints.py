"""Weight constraints: projections applied after each optimizer update."""

import keras

from keras_gradkit import _validation
from keras_gradkit.api_export import keras_gradkit_export


@keras_gradkit_export
class MaxAbs(keras.constraints.Constraint):
    """Projects every entry of a weight into `[-max_value, max_value]`.

    Keras applies constraints right after each optimizer update, so this is
    the projection of the IndRNN paper: the recurrent weights are pulled back
    inside the bound after every step. Unlike clipping inside the forward
    pass, the gradient is untouched past the bound.

    Equation: `w <- clip(w, -max_value, max_value)`.

    Args:
        max_value: positive float, the largest absolute value allowed.

    Example:

    >>> import keras, keras_gradkit
    >>> layer = keras.layers.Dense(
    ...     4, kernel_constraint=keras_gradkit.constraints.MaxAbs(1.0))

    References:
        Li et al., [Independently Recurrent Neural Network (IndRNN): Building
        A Longer and Deeper RNN](https://arxiv.org/abs/1803.04831), 2018.
    """

    def __init__(self, max_value):
        self.max_value = _validation.positive_float("max_value", max_value)

    def __call__(self, w):
        return keras.ops.clip(w, -self.max_value, self.max_value)

    def get_config(self):
        return {"max_value": self.max_value}
