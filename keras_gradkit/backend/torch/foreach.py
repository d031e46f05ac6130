"""torch's multi-tensor ("foreach") ops: one call for a list of tensors (private).

The PyTorch step runs eagerly, so a recorded step's measures cost what
each call costs in Python; these take the step's tensors in one call each,
as torch's own optimizers do (`foreach=True`). They are underscore names in
torch, so each falls back to the per-tensor loop where torch lacks it.
"""

import torch

_POWSUM = getattr(torch, "_foreach_powsum", None)
_SQRT = getattr(torch, "_foreach_sqrt", None)
_CLONE = getattr(torch, "_foreach_clone", None)
_COPY = getattr(torch, "_foreach_copy_", None)
_SUB = getattr(torch, "_foreach_sub", None)


def squared_norms(tensors):
    """The sum of the squares of each tensor's entries, accumulated and
    returned in float32 (float16 and bfloat16 entries included)."""
    tensors = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in tensors]
    if not tensors:
        return []
    if _POWSUM is not None and all(t.is_floating_point() for t in tensors):
        return list(_POWSUM(tensors, 2, dtype=torch.float32))
    return [torch.sum(torch.square(t.to(torch.float32))) for t in tensors]


def sqrts(tensors):
    """The square root of each tensor."""
    if not tensors:
        return []
    if _SQRT is not None:
        return list(_SQRT(list(tensors)))
    return [torch.sqrt(t) for t in tensors]


def differences(xs, ys):
    """`[x - y for x, y in zip(xs, ys)]`."""
    if not xs:
        return []
    if _SUB is not None:
        return list(_SUB(list(xs), list(ys)))
    return [x - y for x, y in zip(xs, ys)]


def clones(tensors):
    """A copy of each tensor (tensors outside autograd: detached ones)."""
    if not tensors:
        return []
    if _CLONE is not None:
        return list(_CLONE(list(tensors)))
    return [t.clone() for t in tensors]


def copy_into(targets, sources):
    """Writes each source into its target, outside autograd. The caller
    checks the shapes (`copy_` would broadcast)."""
    if not targets:
        return
    with torch.no_grad():
        if _COPY is not None:
            _COPY(list(targets), list(sources))
        else:
            for target, source in zip(targets, sources):
                target.copy_(source)
