"""The ops of a recorded step's measures on TensorFlow (private): Keras's own
(`common/step_ops.py`), which the traced step fuses."""

from keras_gradkit.backend.common.step_ops import *  # noqa: F403
from keras_gradkit.backend.common.step_ops import __all__  # noqa: F401
