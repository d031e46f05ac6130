"""The time probe's traced gradient on JAX (private).

`Function` jits a pure function of the variables' values, which each call
passes in, so one compilation serves every call and each call sees the
current weights (a closure over the variables would freeze them at trace
time).
"""

import contextlib

import jax
import keras


class Function:
    """`fn(*args)` in a `keras.StatelessScope`, traced once per argument shape.

    Args:
        fn: callable taking arrays and returning a structure of arrays.
        variables: the `keras.Variable`s that `fn` reads; their current
            values are arguments of the jitted function.
    """

    def __init__(self, fn, variables):
        self.trace_count = 0
        self._variables = list(variables)

        def pure(values, *args):
            self.trace_count += 1  # Python runs this only while tracing
            with keras.StatelessScope(state_mapping=list(zip(self._variables, values))):
                return fn(*args)

        self._function = jax.jit(pure)

    def __call__(self, *args):
        return self._function([v.value for v in self._variables], *args)

    def trace(self, *args):
        """Traces for these arguments without running; True (a call with
        arguments of the same shapes reuses the trace)."""
        trace = (
            getattr(self._function, "trace", None) or self._function.lower
        )  # `trace` is JAX >= 0.4.36
        trace([v.value for v in self._variables], *args)
        return True


def arguments(value):
    """`value` as `Function` takes it: a structure of NumPy arrays as it
    is (a jitted function copies them to the device itself, with none of
    the conversion ops, each a dispatch, that `convert_to_tensor` runs)."""
    return value


def gradients(fn, xs, has_aux=False):
    """d fn(*xs) / d xs for a scalar `fn`: one array per entry of `xs`.
    With `has_aux`, `fn` returns `(value, aux)` and the result is
    `(gradients, aux)`."""
    grads = jax.grad(lambda args: fn(*args), has_aux=has_aux)(list(xs))
    return (list(grads[0]), grads[1]) if has_aux else list(grads)


def gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`; zeros where `fn` does not depend on `x`."""
    return jax.grad(fn)(x)


def kept_random_state():
    """A null context: randomness comes from seed variables, which a
    `keras.StatelessScope` keeps."""
    return contextlib.nullcontext()
