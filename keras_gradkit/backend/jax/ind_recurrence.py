"""The IndRNN engine on JAX (private): `ops.scan` (`lax.scan`) over the steps,
differentiated by JAX, with a few steps unrolled per loop iteration.

The chunked loops with a hand-written backward pass that TensorFlow runs are
much slower under JAX, whose XLA fuses their backward chain badly;
`benchmarks/README.md` has the measurements.
"""

import functools

import jax

from keras_gradkit.backend.common import ind_loops

# Steps unrolled per iteration of `lax.scan`: a little unrolling speeds the
# loop up; more compiles longer and runs slower on short sequences.
_JAX_UNROLL = 2


# Jitted so that a layer called outside a jitted step (eagerly, in a custom
# loop or a test) compiles its scan once per shape, instead of at every call:
# an eager `lax.scan` traces and compiles its body anew each time. Inside
# Keras's jitted train step the inner `jit` is inlined. The parameters are
# `IndRecurrence`'s fields in order, its options static (a compiled scan per
# activation, output and clip).
@functools.partial(jax.jit, static_argnames=("activation", "last_only", "grad_clipping"))
def _scanned(x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping):
    recurrence = ind_loops.IndRecurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping
    )
    return ind_loops.scanned_recurrence(recurrence, unroll=_JAX_UNROLL)


def ind_recurrence(recurrence, training):
    """The states of `recurrence`, an `ind_loops.IndRecurrence`, by `ops.scan`
    for every activation; `training` changes nothing."""
    del training
    return _scanned(*recurrence)


def masked_output_repeats_state():
    """True: Keras's JAX `rnn` repeats the previous state at masked steps
    before the first unmasked one (without `zero_output_for_mask`), so it
    outputs the initial state there."""
    return True
