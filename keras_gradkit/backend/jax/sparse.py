"""Sparse gradients on JAX (private): its gradients are dense."""

from keras_gradkit.backend.dense_sparse import deduplicate
from keras_gradkit.backend.dense_sparse import gather_rows
from keras_gradkit.backend.dense_sparse import is_sparse
from keras_gradkit.backend.dense_sparse import to_dense
from keras_gradkit.backend.dense_sparse import values_of
from keras_gradkit.backend.dense_sparse import with_values

__all__ = ["deduplicate", "gather_rows", "is_sparse", "to_dense", "values_of", "with_values"]
