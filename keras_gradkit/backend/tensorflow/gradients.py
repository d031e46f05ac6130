"""Gradients on TensorFlow (private): a `tf.GradientTape` around a stateless call."""

import keras
import tensorflow as tf


def value_and_grad(fn, inputs, variables):
    """`fn(*inputs)` and its gradient w.r.t. `inputs` and `variables`.

    Args:
        fn: callable taking one tensor per entry of `inputs`, returning a
            scalar tensor; it runs in a `keras.StatelessScope`.
        inputs: list of tensors.
        variables: list of `keras.Variable`s.

    Returns:
        `(value, grads)`: the value and one gradient per input, then per
        variable (None where `fn` does not depend on it).
    """
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        with keras.StatelessScope():
            value = fn(*inputs)
    return value, tape.gradient(value, inputs + [v.value for v in variables])
