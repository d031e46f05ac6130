"""Public layers of keras_gradkit."""

from keras_gradkit.layers.cosine_norm import CosineConv1D, CosineConv2D, CosineDense
from keras_gradkit.layers.group_norm import GroupNorm
from keras_gradkit.layers.gru import GRU, GRUCell
from keras_gradkit.layers.ind_rnn import IndRNN, IndRNNCell
from keras_gradkit.layers.layer_norm_lstm_cell import LayerNormLSTMCell
from keras_gradkit.layers.lru import LRU
from keras_gradkit.layers.lstm import LSTM, LSTMCell
from keras_gradkit.layers.min_rnn import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell
from keras_gradkit.layers.mut import MUT1, MUT2, MUT3, MUT1Cell, MUT2Cell, MUT3Cell
from keras_gradkit.layers.residual_ind_rnn import ResidualIndRNN
from keras_gradkit.layers.weight_normalization import WeightNormalization
