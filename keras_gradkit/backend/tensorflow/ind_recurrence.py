"""The IndRNN engine on TensorFlow (private).

In training, the chunked recurrence with its hand-written backward pass
(`keras_gradkit.backend.common.ind_loops.chunked_recurrence`) runs compiled by
XLA, which fuses each step's operations: TensorFlow's executor otherwise
spends more time dispatching the small per-step operations than computing
them. Inference runs the same loops uncompiled, so an exported SavedModel
needs no XLA to serve. `benchmarks/README.md` has the measurements.
"""

import tensorflow as tf

from keras_gradkit.backend.common import ind_loops

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


def _compiled_recurrence(recurrence):
    """The training engine: `chunked_recurrence` (its forward and hand-written
    backward loops) in a `tf.function` compiled by XLA, with the forward loop
    that XLA does not fuse across steps (`written_forward`)."""
    key = (
        recurrence.activation,
        recurrence.last_only,
        recurrence.mask is None,
        recurrence.kernel is None,
        recurrence.grad_clipping,
        tf.executing_eagerly(),
    )
    if key not in _COMPILED:
        _COMPILED[key] = _compile(recurrence)
    return _COMPILED[key](
        recurrence.x,
        recurrence.bias,
        recurrence.u,
        recurrence.h0,
        kernel=recurrence.kernel,
        mask=recurrence.mask,
    )


def _compile(recurrence):
    """The XLA-compiled engine for `recurrence`'s options; its tensors are
    the function's arguments, never captured."""
    options = recurrence._replace(x=None, kernel=None, bias=None, u=None, h0=None, mask=None)

    def run(x, bias, u, h0, kernel=None, mask=None):
        return ind_loops.chunked_recurrence(
            options._replace(x=x, kernel=kernel, bias=bias, u=u, h0=h0, mask=mask),
            max_chunk=_COMPILED_MAX_CHUNK,
            backward_max_chunk=_COMPILED_MAX_BACKWARD_CHUNK,
            forward=ind_loops.written_forward,
        )

    return tf.function(run, jit_compile=True, autograph=False)


def ind_recurrence(recurrence, training):
    """The states of `recurrence`, an `ind_loops.IndRecurrence`: compiled by XLA
    in training, the same loops uncompiled otherwise, and `ops.scan` for
    activations without a hand-written derivative."""
    if ind_loops.slope_for(recurrence.activation) is None:
        return ind_loops.scanned_recurrence(recurrence)
    if training is True:
        return _compiled_recurrence(recurrence)
    return ind_loops.chunked_recurrence(recurrence)


def masked_output_repeats_state():
    """False: Keras's TensorFlow `rnn` outputs zeros at masked steps before
    the first unmasked one (without `zero_output_for_mask`)."""
    return False
