"""The IndRNN engine on JAX (private): `ops.scan` (`lax.scan`) over the steps,
differentiated by JAX, with a few steps unrolled per loop iteration.

The chunked loops with a hand-written backward pass that TensorFlow runs are
much slower under JAX, whose XLA fuses their backward chain badly;
`benchmarks/README.md` has the measurements.
"""

from keras_gradkit.layers import _ind_loops

# Steps unrolled per iteration of `lax.scan`: a little unrolling speeds the
# loop up; more compiles longer and runs slower on short sequences.
_JAX_UNROLL = 2


def ind_recurrence(x, kernel, bias, u, h0, mask, activation, last_only, training):
    """The states of the recurrence (see `keras_gradkit.layers._ind_recurrence.ind_recurrence`),
    by `ops.scan` for every activation; `training` changes nothing."""
    del training
    return _ind_loops.scanned_recurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, unroll=_JAX_UNROLL
    )


def masked_output_repeats_state():
    """True: Keras's JAX `rnn` repeats the previous state at masked steps
    before the first unmasked one (without `zero_output_for_mask`), so it
    outputs the initial state there."""
    return True
