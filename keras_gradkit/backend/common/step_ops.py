"""The ops of a recorded step's measures with Keras's own ops (private):
TensorFlow's and JAX's `step_ops`, whose steps are traced and fused (see
`backend/torch/step_ops.py` for why PyTorch has its own)."""

from keras.ops import (
    cast,
    concatenate,
    convert_to_tensor,
    divide,
    equal,
    isfinite,
    logical_and,
    logical_not,
    maximum,
    mod,
    sqrt,
    square,
    stack,
    sum,
    where,
    zeros,
    zeros_like,
)
from keras.ops import copy as _copy


def convert_all(values):
    """`[convert_to_tensor(v) for v in values]`; None stays None."""
    return [None if v is None else convert_to_tensor(v) for v in values]


def copy(x):
    """A copy of `x` (a variable's current value, read now)."""
    return _copy(convert_to_tensor(x))


def assign(variable, value):
    """`variable.assign(value)`."""
    variable.assign(value)


def assign_add(variable, value):
    """`variable.assign_add(value)`."""
    variable.assign_add(value)


__all__ = [
    "assign",
    "assign_add",
    "cast",
    "concatenate",
    "convert_all",
    "convert_to_tensor",
    "copy",
    "divide",
    "equal",
    "isfinite",
    "logical_and",
    "logical_not",
    "maximum",
    "mod",
    "sqrt",
    "square",
    "stack",
    "sum",
    "where",
    "zeros",
    "zeros_like",
]
