"""Keras's recurrent layers on TensorFlow (private).

Keras's TensorFlow `LSTM` and `GRU` run the cuDNN kernel when a GPU is
visible and the layer's arguments allow it; XLA cannot compile that kernel,
so such a layer must not be jit-compiled.
"""

import importlib

# The module, not the `rnn` function that `keras.src.backend.tensorflow` exports
# under the same name.
_keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")


def cudnn_disables_jit(cell, unroll, use_cudnn, reset_after=None):
    """Whether Keras may run the layer of `cell` with the cuDNN kernel, so
    that the layer must set `supports_jit = False`: the test that
    `keras.layers.LSTM` (`reset_after=None`) and `keras.layers.GRU` make in
    their constructors (Keras's `cudnn_ok`, which also asks for a GPU)."""
    if use_cudnn not in (True, "auto"):
        return False
    return _keras_rnn.cudnn_ok(
        cell.activation, cell.recurrent_activation, unroll, cell.use_bias, reset_after=reset_after
    )
