"""Sparse gradients on TensorFlow (private).

`Embedding` and `tf.gather` give `tf.IndexedSlices` gradients whose `indices`
repeat: the dense gradient is the sum of the rows with the same index. Once
the duplicates are summed, the values hold exactly the nonzero rows of the
dense gradient, so norms, thresholds and any elementwise transform `f` with
`f(0) = 0` computed on the values equal those of the dense gradient, while the
update stays sparse.
"""

import tensorflow as tf


def is_sparse(g):
    """Whether `g` is a `tf.IndexedSlices`."""
    return isinstance(g, tf.IndexedSlices)


def deduplicate(grads):
    """`grads` with each `tf.IndexedSlices` replaced by one with unique indices
    (duplicate rows summed); dense tensors and `None` are returned as they are."""
    return [_deduplicate(g) if is_sparse(g) else g for g in grads]


def _deduplicate(g):
    indices, positions = tf.unique(g.indices)
    values = tf.math.unsorted_segment_sum(g.values, positions, tf.shape(indices)[0])
    return tf.IndexedSlices(values, indices, g.dense_shape)


def values_of(g):
    """The tensor holding `g`'s entries: the slices' values, or `g` itself."""
    return g.values if is_sparse(g) else g


def with_values(g, values):
    """`g` with its entries replaced by `values` (same indices for slices)."""
    return tf.IndexedSlices(values, g.indices, g.dense_shape) if is_sparse(g) else values


def gather_rows(g, x):
    """The rows of `x` (shaped like the dense `g`) that `g`'s values hold."""
    return tf.gather(x, g.indices) if is_sparse(g) else x


def to_dense(g):
    """`g` as a dense tensor (duplicate rows summed); `None` stays `None`."""
    return None if g is None else tf.convert_to_tensor(g)
