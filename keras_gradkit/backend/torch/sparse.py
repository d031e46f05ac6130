"""Sparse gradients on PyTorch (private): its gradients are dense."""

from keras_gradkit.backend.dense_sparse import (
    deduplicate,
    gather_rows,
    is_sparse,
    to_dense,
    values_of,
    with_values,
)

__all__ = ["deduplicate", "gather_rows", "is_sparse", "to_dense", "values_of", "with_values"]
