"""The L2 norm and the global norm: the package's one definition of each.

The clipping policies, the recording of each optimizer step and the
gradient doctor all measure gradients with these functions. A sparse
gradient (TensorFlow's `IndexedSlices`, deduplicated) counts as its dense
tensor. Everything is computed in float32.

A step measures every gradient once: `reusing(grads, squares)` lets the
policy it then applies (which calls the same functions) reuse those squared
norms instead of computing them again. The reuse is by object identity and
only for the duration of the `with` block, so it holds inside a trace too.
"""

import contextlib

import numpy as np
from keras import ops

from keras_gradkit import backend

# {id(gradient): (gradient, squared norm)} while a step's norms may be reused.
_known = {}


def squared_norm(g):
    """The sum of the squares of `g`'s entries, in float32 (None for None)."""
    return squared_norms([g])[0]


def squared_norms(grads):
    """`[squared_norm(g) for g in grads]`: the squares `reusing` made known
    are reused, the others computed by the backend's `norms.squared_norms`
    (Keras ops; on PyTorch, whose step runs eagerly, its own ops rather than
    Keras's, each of which converts and checks its arguments first)."""
    found = [None] * len(grads)
    todo = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        known = _known.get(id(g))
        if known is not None and known[0] is g:
            found[i] = known[1]
        else:
            todo.append(i)
    if todo:
        sparse = backend.get("sparse")
        values = [sparse.values_of(grads[i]) for i in todo]
        for i, square in zip(todo, backend.get("norms").squared_norms(values)):
            found[i] = square
    return found


def norms(tensors):
    """`[norm(t) for t in tensors]`, computed as `squared_norms` does."""
    return roots(squared_norms(tensors))


def roots(squares):
    """The square root of each entry of `squares` (None stays None), by the
    backend's `norms.sqrts` (on PyTorch, one call for all)."""
    present = iter(backend.get("norms").sqrts([s for s in squares if s is not None]))
    return [None if s is None else next(present) for s in squares]


def keras_squared_norms(tensors):
    """The sum of the squares of each tensor's entries, in float32, with Keras ops."""
    return [ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors]


def keras_sqrts(tensors):
    """The square root of each tensor, with Keras ops."""
    return [ops.sqrt(t) for t in tensors]


def keras_differences(xs, ys):
    """`[x - y for x, y in zip(xs, ys)]`, with Keras ops."""
    return [ops.subtract(x, y) for x, y in zip(xs, ys)]


def norm(g, overflow_safe=False):
    """The L2 norm of `g` in float32 (None for a None gradient).

    With `overflow_safe=True` the entries are first divided by the largest
    one, so that the squares of large finite entries do not overflow (NaN
    and inf stay so); the step's measures do without it, for speed.
    """
    if overflow_safe and g is not None:
        g = ops.cast(backend.get("sparse").values_of(g), "float32")
        peak = ops.max(ops.abs(g)) if len(g.shape) else ops.abs(g)
        unit = ops.where(peak > 0, peak, ops.ones_like(peak))
        return peak * ops.sqrt(ops.sum(ops.square(g / unit)))
    square = squared_norm(g)
    return None if square is None else backend.get("step_ops").sqrt(square)


def global_norm_of_squares(squares):
    """`sqrt(sum(squares))` over the entries that are not None (0 if none)."""
    xp = backend.get("step_ops")
    present = [s for s in squares if s is not None]
    if not present:
        return xp.zeros((), "float32")
    return xp.sqrt(xp.sum(xp.stack(present)))


def global_norm(grads):
    """The L2 norm of all the non-None gradients of `grads` taken together."""
    return global_norm_of_squares(squared_norms(grads))


def host_norm(values):
    """The L2 norm of host values (an array, or the norms of the parts of a
    whole), as a Python float computed in float64."""
    return float(np.sqrt(np.sum(np.square(np.asarray(values, "float64")))))


@contextlib.contextmanager
def reusing(grads, squares):
    """Within the block, `squared_norm(g)` of an entry of `grads` returns
    the matching entry of `squares` (already computed) instead of computing it."""
    added = [id(g) for g in grads if g is not None and id(g) not in _known]
    for g, s in zip(grads, squares):
        if g is not None and id(g) in added:
            _known[id(g)] = (g, s)
    try:
        yield
    finally:
        for key in added:
            _known.pop(key, None)
