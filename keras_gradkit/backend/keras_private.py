"""Keras's private API that keras_gradkit cannot do without (private).

With `backend/tensorflow/rnn.py` (Keras's `cudnn_ok`, the test Keras's own
LSTM and GRU use), the only places in the package that read `keras.src`, so
that a change there breaks here, visibly, and nowhere else.

`DropoutRNNCell`: `keras.layers.RNN` creates a cell's dropout masks before its
loop, and forgets them after the call, only for a cell that is an instance of
this class, which Keras does not export. A cell outside it would have to
create its masks inside the loop: under JAX's `lax.scan` the mask is then a
tracer that escapes the loop, and TensorFlow's and PyTorch's loops would keep
the first mask for every later call. `keras_gradkit.layers.IndRNNCell`
writes its masks itself with public API and uses the class only as the mark
that `keras.layers.RNN` looks for.
"""

from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

__all__ = ["DropoutRNNCell"]
