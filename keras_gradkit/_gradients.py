"""Gradients on every Keras backend (private).

The one place that knows how each backend differentiates: a tape on
TensorFlow, `jax.value_and_grad` of a stateless call on JAX, autograd on
PyTorch. Used outside the train step (the time probe of `GradientBoard`) and
by the tests as an independent way to get a gradient. `fn` runs in a
`keras.StatelessScope`, so whatever it would assign (metric trackers,
moving statistics) is discarded: computing a gradient changes no variable.
"""

import keras
import numpy as np


def value_and_gradients(fn, inputs=(), variables=()):
    """Evaluates `fn(*inputs)` and its gradient.

    Args:
        fn: callable taking one tensor per entry of `inputs` and returning a
            scalar tensor. It may read `variables` (for example by calling a
            layer that owns them).
        inputs: arrays to differentiate with respect to (converted to
            tensors and passed to `fn`).
        variables: `keras.Variable`s to differentiate with respect to.

    Returns:
        `(value, input_gradients, variable_gradients)`: a Python float and
        two lists of float NumPy arrays (zeros where `fn` does not depend on
        the input or variable).
    """
    inputs = [keras.ops.convert_to_tensor(x) for x in inputs]
    variables = list(variables)
    backend = keras.backend.backend()
    if backend != "jax":  # JAX maps the variables to traced values itself
        fn = _stateless(fn)
    if backend == "tensorflow":
        value, grads = _tensorflow(fn, inputs, variables)
    elif backend == "jax":
        value, grads = _jax(fn, inputs, variables)
    elif backend == "torch":
        value, grads = _torch(fn, inputs, variables)
    else:
        raise NotImplementedError(f"Gradients are not implemented for the {backend!r} backend.")
    targets = inputs + [v.value for v in variables]
    grads = [
        np.zeros(tuple(t.shape), "float32") if g is None else keras.ops.convert_to_numpy(g)
        for g, t in zip(grads, targets)
    ]
    return float(keras.ops.convert_to_numpy(value)), grads[: len(inputs)], grads[len(inputs) :]


def _stateless(fn):
    def call(*args):
        with keras.StatelessScope():
            return fn(*args)

    return call


def _tensorflow(fn, inputs, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        value = fn(*inputs)
    return value, tape.gradient(value, inputs + [v.value for v in variables])


def _jax(fn, inputs, variables):
    import jax

    def pure(xs, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*xs)

    value, (gx, gv) = jax.value_and_grad(pure, argnums=(0, 1))(inputs, [v.value for v in variables])
    return value, list(gx) + list(gv)


def _torch(fn, inputs, variables):
    import torch

    inputs = [x.detach().requires_grad_(True) for x in inputs]
    value = fn(*inputs)
    targets = inputs + [v.value for v in variables]
    return value, list(torch.autograd.grad(value, targets, allow_unused=True))
