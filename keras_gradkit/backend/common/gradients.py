"""Gradients that may be sparse (TensorFlow's `IndexedSlices`), handled the
same way on every backend (private)."""

from keras_gradkit import backend


def map_values(g, fn):
    """`fn` applied to the entries of `g`: the values of slices, which stay
    slices, or the whole tensor. None stays None."""
    if g is None:
        return None
    sparse = backend.get("sparse")
    return sparse.with_values(g, fn(sparse.values_of(g)))


def to_dense(g):
    """`g` as a dense tensor (slices scattered; None stays None)."""
    return None if g is None else backend.get("sparse").to_dense(g)
