"""Gradients on JAX (private): `jax.value_and_grad` of a pure function of the
inputs and of the variables' values, which a `keras.StatelessScope` maps to
the variables."""

import jax
import keras


def value_and_grad(fn, inputs, variables):
    """`fn(*inputs)` and its gradient w.r.t. `inputs` and `variables`.

    Args:
        fn: callable taking one tensor per entry of `inputs`, returning a
            scalar tensor; it runs in a `keras.StatelessScope` that maps
            `variables` to traced values.
        inputs: list of tensors.
        variables: list of `keras.Variable`s.

    Returns:
        `(value, grads)`: the value and one gradient per input, then per
        variable.
    """

    def pure(xs, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*xs)

    value, (gx, gv) = jax.value_and_grad(pure, argnums=(0, 1))(inputs, [v.value for v in variables])
    return value, list(gx) + list(gv)
