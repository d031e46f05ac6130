"""The linear recurrences on PyTorch (private): which of the two ways of
computing `h_t = a_t * h_{t-1} + b_t` (`MinGRU`, `MinLSTM`, `LRU`) their
`mode="auto"` runs here.

`AUTO_MODE` is the mode that trained faster in `model.fit` in
`benchmarks/rnn_speed.py` (the section "Recurrent layers for long sequences:
training speed" of `benchmarks/README.md`).
"""

# The parallel scan: the loop runs in Python, a few eager ops and their
# autograd nodes per step, where the scan runs log2(T) levels of whole-tensor ops.
AUTO_MODE = "parallel"
