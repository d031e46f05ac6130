"""The IndRNN engine on TensorFlow (private).

In training, the chunked recurrence with its hand-written backward pass
(`keras_gradkit.layers._ind_loops.chunked_recurrence`) runs compiled by XLA,
which fuses each step's operations: TensorFlow's executor otherwise spends
more time dispatching the small per-step operations than computing them.
Inference runs the same loops uncompiled, so an exported SavedModel needs no
XLA to serve. `benchmarks/README.md` has the measurements.
"""

import tensorflow as tf

from keras_gradkit.layers import _ind_loops

# Steps per iteration of the loops XLA compiles. The backward loop takes longer
# chunks: they spread its per-chunk work (the slopes, the weight-gradient
# products) over more steps, while longer forward chunks gain nothing.
_COMPILED_MAX_CHUNK = 16
_COMPILED_MAX_BACKWARD_CHUNK = 25

# XLA-compiled engines, one per (activation, last_only, masked, kernel, clip,
# eager). An eager call gets a function of its own: a function traced inside a
# graph (a train step) and then called eagerly under a tape has no gradient for
# its loop's ops (`LookupError` on `XlaDynamicUpdateSlice`), so the two are
# never shared.
_COMPILED = {}


def _compiled_recurrence(x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping):
    """The training engine: `chunked_recurrence` (its forward and hand-written
    backward loops) in a `tf.function` compiled by XLA, with the forward loop
    that XLA does not fuse across steps (`written_forward`)."""
    key = (
        activation,
        last_only,
        mask is None,
        kernel is None,
        grad_clipping,
        tf.executing_eagerly(),
    )
    if key not in _COMPILED:

        def run(x, bias, u, h0, kernel=None, mask=None):
            return _ind_loops.chunked_recurrence(
                x,
                kernel,
                bias,
                u,
                h0,
                mask,
                activation,
                last_only,
                max_chunk=_COMPILED_MAX_CHUNK,
                backward_max_chunk=_COMPILED_MAX_BACKWARD_CHUNK,
                forward=_ind_loops.written_forward,
                grad_clipping=grad_clipping,
            )

        _COMPILED[key] = tf.function(run, jit_compile=True, autograph=False)
    return _COMPILED[key](x, bias, u, h0, kernel=kernel, mask=mask)


def ind_recurrence(
    x, kernel, bias, u, h0, mask, activation, last_only, training, grad_clipping=None
):
    """The states of the recurrence (see `keras_gradkit.layers._ind_recurrence.ind_recurrence`):
    compiled by XLA in training, the same loops uncompiled otherwise, and
    `ops.scan` for activations without a hand-written derivative."""
    if _ind_loops.slope_for(activation) is None:
        return _ind_loops.scanned_recurrence(
            x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping=grad_clipping
        )
    if training is True:
        return _compiled_recurrence(
            x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping
        )
    return _ind_loops.chunked_recurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, grad_clipping=grad_clipping
    )


def masked_output_repeats_state():
    """False: Keras's TensorFlow `rnn` outputs zeros at masked steps before
    the first unmasked one (without `zero_output_for_mask`)."""
    return False
