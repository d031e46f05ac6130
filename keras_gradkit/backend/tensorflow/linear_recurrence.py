"""The linear recurrences on TensorFlow (private): which of the two ways of
computing `h_t = a_t * h_{t-1} + b_t` (`MinGRU`, `MinLSTM`, `LRU`) their
`mode="auto"` runs here.

`AUTO_MODE` is the mode that trained faster in `model.fit` in
`benchmarks/rnn_speed.py` (the section "Recurrent layers for long sequences:
training speed" of `benchmarks/README.md`).
"""

# The loop: at the benchmark's width (batch 64, 128 units) it trained MinGRU
# faster at every length and the LRU from 1,000 steps on, and traced several
# times faster than the scan, whose interleaving TensorFlow runs in `tf.cond`s.
# Narrower layers (batch 16, 32 units) went the other way, so the choice is
# close here: pass `mode` to choose.
AUTO_MODE = "sequential"
