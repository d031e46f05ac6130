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
        # that lead up to the differentiated sequence. Keras's PyTorch
        # backend draws an unseeded layer's randomness (Dropout) from torch's
        # global generator, not from a seed variable that the StatelessScope
        # would keep: its state is restored, so a call changes nothing and
        # two calls agree.
        with kept_random_state(), torch.no_grad(), keras.StatelessScope():
            outputs = self._fn(*args)
        return keras.tree.map_structure(
            lambda t: t.detach() if isinstance(t, torch.Tensor) else t, outputs
        )

    def trace(self, *args):
        """False: nothing is traced, so the caller checks eagerly."""
        del args
        return False


def kept_random_state():
    """A context that restores torch's global random generators (CPU, and
    the CUDA devices in use) on exit."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


def arguments(value):
    """`value`, a structure of arrays (or None), as `Function` takes it: tensors."""
    return None if value is None else keras.tree.map_structure(keras.ops.convert_to_tensor, value)


def gradients(fn, xs, has_aux=False):
    """d fn(*xs) / d xs for a scalar `fn`: one tensor per entry of `xs`,
    zeros where `fn` does not depend on it. With `has_aux`, `fn` returns
    `(value, aux)` and the result is `(gradients, aux)`."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    with torch.enable_grad():
        value = fn(*xs)
        value, aux = value if has_aux else (value, None)
        grads = torch.autograd.grad(value, xs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs)]
    return (grads, aux) if has_aux else grads


def gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`; zeros where `fn` does not depend on `x`."""
    return gradients(fn, [x])[0]
