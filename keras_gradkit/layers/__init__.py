"""Public layers of keras_gradkit."""

from keras_gradkit.layers.ind_rnn import IndRNN
from keras_gradkit.layers.ind_rnn import IndRNNCell
