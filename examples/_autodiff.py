"""The gradient of a loss with respect to Keras variables, on every backend,
for the examples that measure gradient norms outside `fit`.

Each backend differentiates its own way: a `tf.GradientTape` on TensorFlow,
`jax.grad` of a pure function of the variables' values on JAX,
`torch.autograd.grad` on PyTorch. The loss runs in a `keras.StatelessScope`,
so whatever it would assign (batch normalization's moving statistics, a
data-dependent initialization) is discarded: measuring a gradient changes no
variable.
"""

import keras
import numpy as np


def gradients(loss, variables):
    """The gradient of `loss()` with respect to `variables`.

    Args:
        loss: callable without arguments returning a scalar tensor; it may
            read `variables` (for example by calling a model that owns them).
        variables: `keras.Variable`s.

    Returns:
        One float NumPy array per variable (zeros where the loss does not
        depend on it).
    """
    variables = list(variables)
    grads = _BACKENDS[keras.backend.backend()](loss, variables)
    return [
        np.zeros(tuple(v.shape), "float32") if g is None else keras.ops.convert_to_numpy(g)
        for g, v in zip(grads, variables)
    ]


def _tensorflow(loss, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        with keras.StatelessScope():
            value = loss()
    return tape.gradient(value, [v.value for v in variables])


def _jax(loss, variables):
    import jax

    # JAX differentiates arguments only: the scope maps the variables to them.
    def pure(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return loss()

    return jax.grad(pure)([v.value for v in variables])


def _torch(loss, variables):
    import torch

    with keras.StatelessScope():
        value = loss()
    return torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)


_BACKENDS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
