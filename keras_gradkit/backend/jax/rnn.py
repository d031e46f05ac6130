"""Keras's recurrent layers on JAX (private)."""


def cudnn_disables_jit(cell, unroll, use_cudnn, reset_after=None):
    """False: the TensorFlow cuDNN kernel, which XLA cannot compile, does not
    run on JAX, and Keras's `LSTM` and `GRU` keep `supports_jit` there
    (see `keras_gradkit/backend/tensorflow/rnn.py`)."""
    del cell, unroll, use_cudnn, reset_after
    return False
