"""Gradients on every Keras backend, for the tests: an independent way to get
a gradient, outside any train step.

Each backend differentiates its own way: a `tf.GradientTape` on TensorFlow,
`jax.value_and_grad` of a pure function of the variables' values on JAX,
`torch.autograd.grad` on PyTorch. `fn` runs in a `keras.StatelessScope`, so
whatever it would assign (metric trackers, moving statistics) is discarded:
computing a gradient changes no variable.
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
    value_and_grad = _BACKENDS[keras.backend.backend()]
    value, grads = value_and_grad(fn, inputs, variables)
    targets = inputs + [v.value for v in variables]
    grads = [
        np.zeros(tuple(t.shape), "float32") if g is None else keras.ops.convert_to_numpy(g)
        for g, t in zip(grads, targets)
    ]
    return float(keras.ops.convert_to_numpy(value)), grads[: len(inputs)], grads[len(inputs) :]


# Each returns `(value, grads)`: one gradient per input, then per variable
# (None where `fn` does not depend on it).


def _tensorflow(fn, inputs, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        with keras.StatelessScope():
            value = fn(*inputs)
    return value, tape.gradient(value, inputs + [v.value for v in variables])


def _jax(fn, inputs, variables):
    import jax

    # A pure function of the inputs and of the variables' values, which the
    # scope maps to the variables: JAX differentiates only its arguments.
    def pure(xs, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*xs)

    value, (gx, gv) = jax.value_and_grad(pure, argnums=(0, 1))(inputs, [v.value for v in variables])
    return value, list(gx) + list(gv)


def _torch(fn, inputs, variables):
    import torch

    inputs = [x.detach().requires_grad_(True) for x in inputs]
    with keras.StatelessScope():
        value = fn(*inputs)
    targets = inputs + [v.value for v in variables]
    return value, list(torch.autograd.grad(value, targets, allow_unused=True))


_BACKENDS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
