"""The IndRNN recurrence (private): what `keras_gradkit.layers.IndRNN` calls.

Each backend runs the engine that measured fastest in `model.fit`
(`benchmarks/rnn_speed.py`), in `keras_gradkit/backend/<name>/ind_recurrence.py`:
chunks with a hand-written backward pass on TensorFlow (compiled by XLA in
training), `ops.scan` differentiated by JAX on JAX, a
`torch.autograd.Function` with in-place loops on PyTorch. The loops they
share, in `keras.ops`, are in `_ind_loops.py`; nothing here depends on the
backend.
"""

import keras

from keras_gradkit import backend


def masked_output_repeats_state():
    """Keras's output at masked steps before the first unmasked one (without
    `zero_output_for_mask`): its JAX `rnn` repeats the previous state, so the
    initial state; its TensorFlow and PyTorch `rnn` output zeros."""
    return backend.get("ind_recurrence").masked_output_repeats_state()


def ind_recurrence(
    x,
    kernel,
    bias,
    u,
    h0,
    mask=None,
    activation=keras.activations.relu,
    last_only=False,
    training=False,
    grad_clipping=None,
):
    """Runs `h_t = activation(x_t @ kernel + bias + u * h_{t-1})` over
    time-major inputs, with the engine that is fastest on the backend:

    - TensorFlow: chunks of steps per loop iteration and a hand-written
      backward pass (`_ind_loops.chunked_recurrence`), compiled by XLA in
      training (`backend/tensorflow/ind_recurrence.py`);
    - PyTorch: a `torch.autograd.Function` with in-place loops
      (`backend/torch/ind_recurrence.py`);
    - JAX, and any activation without a hand-written derivative: `ops.scan`
      differentiated automatically (`_ind_loops.scanned_recurrence`).

    Args:
        x: `(timesteps, batch, features)`.
        kernel: `(features, units)`, or None for the recurrence alone
            (`x_t + bias + u * h_{t-1}`, `features == units`).
        bias: `(units,)`.
        u: `(units,)`, the recurrent weights.
        h0: `(batch, units)`, the initial state.
        mask: optional boolean `(timesteps, batch, 1)`; masked steps keep the
            previous state.
        activation: the activation. Relu, tanh, sigmoid and linear have
            hand-written derivatives (functions of the stored states).
        last_only: return only the last state; the backward pass then skips
            the (all-zero) gradients of the other states.
        training: whether the layer trains (TensorFlow then compiles the
            loops with XLA).
        grad_clipping: positive float or None: during backpropagation the
            gradient w.r.t. each step's pre-activation is clipped
            elementwise to `[-grad_clipping, grad_clipping]`, as Lasagne's
            `grad_clipping`; the forward pass is unchanged.

    Returns:
        The states, `(timesteps, batch, units)`, or the last one.
    """
    engine = backend.get("ind_recurrence")
    return engine.ind_recurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, training, grad_clipping
    )
