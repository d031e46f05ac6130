IndRNN=IndRNNCell=None
