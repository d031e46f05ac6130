"""The batch `keras_gradkit.diagnose` measures: the first batch of what it is
given, as NumPy structures, checked, and its non-finite entries."""

import keras
import numpy as np

from keras_gradkit.backend import keras_private
from keras_gradkit.diagnostics import time_probe
from keras_gradkit.diagnostics.time_probe import brief_error, describe_shapes

# What a nested Python list holding one array's entries holds.
_SCALARS = (bool, int, float, complex, str, bytes, np.generic)


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (or quacks like one)."""
    return hasattr(x, "element_spec") and hasattr(x, "take")


def check_batch(model, x, y=None, sample_weight=None, forward=True):
    """`(x, y, sample_weight)` of the first batch, as NumPy structures,
    checked against `model` before anything measures it.

    `first_batch`, then: `y` is given when the model's loss needs it, and
    (`forward`) the model and its loss run on the batch's first example (the
    whole batch for a model with a fixed batch size), changing no variable.
    That pass is eager: on TensorFlow and JAX a recurrent layer runs its
    loop op by op, the time of many training steps, so `diagnose` runs it
    only for the first batch of each shape it sees for a model.

    Raises:
        ValueError: `y` is None but the model's compiled loss compares its
            predictions with targets; the model or its loss cannot take the
            batch (with the gist of their error); or as `first_batch`.
        TypeError: as `first_batch`.
    """
    x, y, sample_weight = first_batch(x, y, sample_weight)
    if y is None and _loss_needs_targets(model):
        raise ValueError(
            "Argument `y` must hold the batch's targets: the model's compiled loss compares its "
            "predictions with them. Pass `diagnose(model, x, y)`, or a dataset or generator that "
            f"yields (x, y) batches. Received: y=None, x of shape {describe_shapes(x)}"
        )
    if forward:
        described = f"Argument `x` holds inputs of shape {describe_shapes(x)}"
        time_probe.check_forward(model, x, y, described)
    return x, y, sample_weight


def first_batch(x, y, sample_weight):
    """`(x, y, sample_weight)` of the first batch, as NumPy structures.

    A nested Python list of numbers becomes one array; each array must have
    a batch axis, and all the same number of rows (at least one).

    Raises:
        TypeError: `x` is None, or an entry is not an array.
        ValueError: a dataset or generator `x` is empty, a nested list is
            ragged, the batch is empty, or `x`, `y` and `sample_weight`
            have different numbers of rows.
    """
    x, y, sample_weight = _first_element(x, y, sample_weight)
    if x is None:
        raise TypeError(
            "Argument `x` must be a batch of inputs, a dataset or a generator. Received: x=None"
        )
    x, y, sample_weight = (
        _convert(value, name)
        for value, name in ((x, "x"), (y, "y"), (sample_weight, "sample_weight"))
    )
    _check_rows(x, y, sample_weight)
    return x, y, sample_weight


def _first_element(x, y, sample_weight):
    """`(x, y, sample_weight)`: the first element of a dataset or generator
    `x`, or the arguments themselves."""
    source = None
    try:
        if is_dataset(x):
            source = "a tf.data.Dataset"
            element = next(iter(x))
        elif isinstance(x, keras.utils.PyDataset):
            source = "a keras.utils.PyDataset"
            element = x[0]
        elif hasattr(x, "__next__"):
            source = "a generator"
            element = next(x)
    except (StopIteration, IndexError) as e:
        raise ValueError(
            f"Argument `x` must yield at least one batch: `diagnose` measures the first. "
            f"Received: x, {source} that yields none ({type(e).__name__})"
        ) from e
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


def _convert(value, name):
    """A structure of arrays (None stays None); nested lists of numbers are one array each."""
    if value is None:
        return None

    def nested_list(part):
        if isinstance(part, (list, tuple)) and _holds_scalars(part):
            return _list_array(part, name)
        return None  # go on into the structure

    value = keras.tree.traverse(nested_list, value)
    return keras.tree.map_structure(lambda a: _as_array(a, name), value)


def _holds_scalars(value):
    """Whether every leaf of a nested list or tuple is a number (or string)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif not isinstance(item, _SCALARS):
            return False
    return True


def _list_array(value, name):
    try:
        return np.asarray(value)
    except ValueError as e:  # ragged
        raise ValueError(
            f"Argument `{name}` must be an array, or a nested list of one shape: pad its "
            f"sequences to one length. Received: a ragged list of {len(value)} rows "
            f"({brief_error(e, 160)})"
        ) from e


def _as_array(a, name):
    tensor = hasattr(a, "shape") and not isinstance(a, (np.ndarray, np.generic))
    array = np.asarray(keras.ops.convert_to_numpy(a) if tensor else a)
    if array.dtype == object:
        raise TypeError(
            f"Argument `{name}` must hold arrays, or nested lists of numbers. Received: "
            f"an entry of type {type(a).__name__}"
        )
    return array


def _check_rows(x, y, sample_weight):
    """Every array has a batch axis (those of `x` at least one row), all of the same size."""
    for a in keras.tree.flatten(x):
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(
                "Argument `x` must hold a batch: arrays with a first axis of one row per "
                f"example, at least one. Received: x of shape {describe_shapes(x)}"
            )
    rows = {}
    for name, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            found = sorted({a.shape[0] for a in keras.tree.flatten(value) if a.ndim})
            if found:
                rows[name] = found
    if len({n for found in rows.values() for n in found}) > 1:
        text = ", ".join(f"{name} with {_rows(found)} rows" for name, found in rows.items())
        raise ValueError(
            "Arguments `x`, `y` and `sample_weight` must have the same number of rows, one per "
            f"example. Received: {text}"
        )


def _rows(found):
    shown = " or ".join(str(n) for n in found[:3])
    return shown + (" or more" if len(found) > 3 else "")


def _loss_needs_targets(model):
    """Whether the model's loss is its compiled loss, which compares predictions with `y`
    (a model that overrides `compute_loss` may not need them)."""
    owner = next((c for c in type(model).__mro__ if "compute_loss" in vars(c)), None)
    keras_own = owner is not None and owner.__module__.startswith("keras.")
    return keras_own and keras_private.compiled_loss(model) is not None


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
