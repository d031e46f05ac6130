"""The time probe's gradient on PyTorch (private): eager, as the PyTorch
trainer runs, with autograd."""

import keras
import torch


class Function:
    """`fn(*args)` in a `keras.StatelessScope`, run eagerly at each call.

    Args:
        fn: callable taking tensors and returning a structure of tensors.
        variables: the `keras.Variable`s that `fn` reads (eager code reads
            them directly).
    """

    def __init__(self, fn, variables):
        del variables
        self.trace_count = 0  # nothing is traced
        self._fn = fn

    def __call__(self, *args):
        # Autograd records only inside `gradient`, not the forward passes
        # that lead up to the differentiated sequence.
        with torch.no_grad(), keras.StatelessScope():
            outputs = self._fn(*args)
        return keras.tree.map_structure(
            lambda t: t.detach() if isinstance(t, torch.Tensor) else t, outputs
        )

    def trace(self, *args):
        """False: nothing is traced, so the caller checks eagerly."""
        del args
        return False


def gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`; zeros where `fn` does not depend on `x`."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = fn(x)
        (grad,) = torch.autograd.grad(value, [x], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad
