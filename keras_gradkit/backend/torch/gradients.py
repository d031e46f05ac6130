"""Gradients on PyTorch (private): `torch.autograd.grad` of a stateless call."""

import keras
import torch


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
    inputs = [x.detach().requires_grad_(True) for x in inputs]
    with keras.StatelessScope():
        value = fn(*inputs)
    targets = inputs + [v.value for v in variables]
    return value, list(torch.autograd.grad(value, targets, allow_unused=True))
