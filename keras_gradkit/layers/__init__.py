"""Public layers of keras_gradkit."""

from keras_gradkit.layers.cosine_norm import CosineConv1D
from keras_gradkit.layers.cosine_norm import CosineConv2D
from keras_gradkit.layers.cosine_norm import CosineDense
from keras_gradkit.layers.group_norm import GroupNorm
from keras_gradkit.layers.gru import GRU
from keras_gradkit.layers.gru import GRUCell
from keras_gradkit.layers.ind_rnn import IndRNN
from keras_gradkit.layers.ind_rnn import IndRNNCell
from keras_gradkit.layers.layer_norm_lstm_cell import LayerNormLSTMCell
from keras_gradkit.layers.lstm import LSTM
from keras_gradkit.layers.lstm import LSTMCell
from keras_gradkit.layers.residual_ind_rnn import ResidualIndRNN
from keras_gradkit.layers.weight_normalization import WeightNormalization
