"""The IndRNN recurrence (private): what `keras_gradkit.layers.IndRNN` calls.

Each backend runs the engine that measured fastest in `model.fit`
(`benchmarks/rnn_speed.py`), in `keras_gradkit/backend/<name>/ind_recurrence.py`:
chunks with a hand-written backward pass on TensorFlow (compiled by XLA in
training), `ops.scan` differentiated by JAX on JAX, a
`torch.autograd.Function` with in-place loops on PyTorch. What they compute
(`IndRecurrence`) and the loops they share, in `keras.ops`, are in
`keras_gradkit/backend/common/ind_loops.py`; nothing here depends on the
backend.
"""

from keras_gradkit import backend


def masked_output_repeats_state():
    """Keras's output at masked steps before the first unmasked one (without
    `zero_output_for_mask`): its JAX `rnn` repeats the previous state, so the
    initial state; its TensorFlow and PyTorch `rnn` output zeros."""
    return backend.get("ind_recurrence").masked_output_repeats_state()


def ind_recurrence(recurrence, training=False):
    """Runs `recurrence`, an `IndRecurrence`
    (`h_t = activation(x_t @ kernel + bias + u * h_{t-1})` over time-major
    inputs), with the engine that is fastest on the backend:

    - TensorFlow: chunks of steps per loop iteration and a hand-written
      backward pass (`ind_loops.chunked_recurrence`), compiled by XLA in
      training (`backend/tensorflow/ind_recurrence.py`);
    - PyTorch: a `torch.autograd.Function` with in-place loops
      (`backend/torch/ind_recurrence.py`);
    - JAX, and any activation without a hand-written derivative: `ops.scan`
      differentiated automatically (`ind_loops.scanned_recurrence`).

    Args:
        recurrence: `keras_gradkit.backend.common.ind_loops.IndRecurrence`,
            the tensors and options of the run.
        training: whether the layer trains (TensorFlow then compiles the
            loops with XLA).

    Returns:
        The states, `(timesteps, batch, units)`, or the last one with
        `recurrence.last_only`.
    """
    return backend.get("ind_recurrence").ind_recurrence(recurrence, training)
