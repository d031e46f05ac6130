"""The linear recurrences on JAX (private): which of the two ways of
computing `h_t = a_t * h_{t-1} + b_t` (`MinGRU`, `MinLSTM`, `LRU`) their
`mode="auto"` runs here.

`AUTO_MODE` is the mode that trained faster in `model.fit` in
`benchmarks/rnn_speed.py` (the section "Recurrent layers for long sequences:
training speed" of `benchmarks/README.md`).
"""

# The loop: XLA compiles `lax.scan` into one tight loop on the CPU, which beat
# the associative scan's log2(T) levels of strided slices and concatenations
# and compiles faster.
AUTO_MODE = "sequential"
