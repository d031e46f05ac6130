"""The time probe's traced gradient on TensorFlow (private).

`Function` traces once into a `tf.function`, which reads the model's
variables when it runs, so each call sees the current weights.
"""

import contextlib

import keras
import tensorflow as tf


class Function:
    """`fn(*args)` in a `keras.StatelessScope`, traced once per argument shape.

    Args:
        fn: callable taking tensors and returning a structure of tensors.
        variables: the `keras.Variable`s that `fn` reads. A `tf.function`
            reads them when it runs, so they need not be passed.
    """

    def __init__(self, fn, variables):
        del variables
        self.trace_count = 0

        def traced(*args):
            self.trace_count += 1  # Python runs this only while tracing
            with keras.StatelessScope():
                return fn(*args)

        self._function = tf.function(traced)

    def __call__(self, *args):
        return self._function(*args)

    def trace(self, *args):
        """Traces for these arguments without running; True (a call with
        arguments of the same shapes reuses the trace)."""
        self._function.get_concrete_function(*args)
        return True


def arguments(value):
    """`value`, a structure of arrays (or None), as `Function` takes it: tensors."""
    return None if value is None else keras.tree.map_structure(keras.ops.convert_to_tensor, value)


def gradients(fn, xs, has_aux=False):
    """d fn(*xs) / d xs for a scalar `fn`: one dense tensor per entry of
    `xs`, zeros where `fn` does not depend on it. With `has_aux`, `fn`
    returns `(value, aux)` and the result is `(gradients, aux)`."""
    xs = list(xs)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        value = fn(*xs)
    value, aux = value if has_aux else (value, None)
    grads = tape.gradient(value, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = [tf.convert_to_tensor(g) for g in grads]  # an IndexedSlices after a gather
    return (grads, aux) if has_aux else grads


def gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`; zeros where `fn` does not depend on `x`."""
    return gradients(fn, [x])[0]


def kept_random_state():
    """A null context: randomness comes from seed variables, which a
    `keras.StatelessScope` keeps."""
    return contextlib.nullcontext()
