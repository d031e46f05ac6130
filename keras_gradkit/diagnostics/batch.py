"""The batch `keras_gradkit.diagnose` measures: the first batch of what it is
given, as NumPy structures, and its non-finite entries."""

import keras
import numpy as np


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (or quacks like one)."""
    return hasattr(x, "element_spec") and hasattr(x, "take")


def first_batch(x, y, sample_weight):
    """`(x, y, sample_weight)` of the first batch, as NumPy structures."""
    x, y, sample_weight = _first_element(x, y, sample_weight)
    if x is None:
        raise TypeError(
            "Argument `x` must be a batch of inputs, a dataset or a generator. Received: x=None"
        )

    def convert(value):
        return None if value is None else keras.tree.map_structure(_as_array, value)

    return convert(x), convert(y), convert(sample_weight)


def _first_element(x, y, sample_weight):
    """`(x, y, sample_weight)`: the first element of a dataset or generator
    `x`, or the arguments themselves."""
    source = None
    if is_dataset(x):
        source, element = "a tf.data.Dataset", next(iter(x))
    elif isinstance(x, keras.utils.PyDataset):
        source, element = "a keras.utils.PyDataset", x[0]
    elif hasattr(x, "__next__"):
        source, element = "a generator", next(x)
    if source is None:
        return x, y, sample_weight
    if y is not None or sample_weight is not None:
        raise ValueError(
            f"Arguments `y` and `sample_weight` must be None when `x` is {source}, which yields "
            f"them. Received: y of type {type(y).__name__}, sample_weight of type "
            f"{type(sample_weight).__name__}"
        )
    if not isinstance(element, (tuple, list)):
        element = (element,)
    return keras.utils.unpack_x_y_sample_weight(tuple(element))


def _as_array(a):
    array = np.asarray(keras.ops.convert_to_numpy(a) if hasattr(a, "shape") else a)
    if array.dtype == object:
        raise TypeError(
            f"Arguments `x`, `y` and `sample_weight` must hold arrays. Received: {type(a).__name__}"
        )
    return array


def non_finite_entries(*structures):
    """How many float entries of the structures (None: skipped) are NaN or inf."""
    count = 0
    for structure in structures:
        if structure is None:
            continue
        for a in keras.tree.flatten(structure):
            if np.issubdtype(a.dtype, np.floating):
                count += int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    return count
