"""Gradients on every Keras backend (private).

How each backend differentiates lives in `keras_gradkit/backend/<name>/gradients.py`:
a tape on TensorFlow, `jax.value_and_grad` of a stateless call on JAX,
autograd on PyTorch. Used outside the train step (the time probe of
`GradientBoard`) and by the tests as an independent way to get a gradient.
`fn` runs in a `keras.StatelessScope`, so whatever it would assign (metric
trackers, moving statistics) is discarded: computing a gradient changes no
variable.
"""

import keras
import numpy as np

from keras_gradkit import backend


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
    value, grads = backend.get("gradients").value_and_grad(fn, inputs, variables)
    targets = inputs + [v.value for v in variables]
    grads = [
        np.zeros(tuple(t.shape), "float32") if g is None else keras.ops.convert_to_numpy(g)
        for g, t in zip(grads, targets)
    ]
    return float(keras.ops.convert_to_numpy(value)), grads[: len(inputs)], grads[len(inputs) :]
