"""The ops of a recorded step's measures on PyTorch (private).

The PyTorch step runs eagerly, so the recording's few dozen small ops per
step cost what each call costs in Python. Keras's ops convert and check
every argument first (5-40 µs a call here, against 1-3 µs for torch's own),
which made the recording a few percent of a small model's step. These are
the same functions under the same names, with the same results for the
arguments the recording passes them: tensors, `keras.Variable`s and Python
scalars, dtypes by name or as torch dtypes. Python scalars become tensors on
Keras's device, as Keras makes them. A tensor passes through
`convert_to_tensor` as it is (the step's own tensors are where Keras put
them); `convert_all`, for the clipping policies' arguments, moves a tensor
to Keras's device as Keras's conversion does.
"""

import keras
import torch
from keras import ops as _keras_ops

from keras_gradkit.backend import keras_private

_DTYPES = {}  # dtype name -> the torch dtype Keras makes of it


def _dtype(dtype):
    if isinstance(dtype, torch.dtype):
        return dtype
    found = _DTYPES.get(dtype)
    if found is None:  # Keras's own mapping (torch has no uint16, ...), asked once
        found = _DTYPES[dtype] = _keras_ops.zeros((), dtype).dtype
    return found


def _resolved(device):
    """Keras's device name as the `device` of a tensor on it: the CPU has no
    index; a GPU named without one is the current one (where `.to` puts it)."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.device("cpu")
    if device.index is None:
        index = torch.cuda.current_device() if device.type == "cuda" else 0
        return torch.device(device.type, index)
    return device


def convert_to_tensor(x, dtype=None):
    """`keras.ops.convert_to_tensor`, without its checks for a tensor."""
    if isinstance(x, torch.Tensor):  # the common case first
        return x if dtype is None else cast(x, dtype)
    if isinstance(x, keras.Variable):
        return convert_to_tensor(x.value, dtype)
    if isinstance(x, (bool, int, float)):  # what Keras's conversion makes of it
        if dtype is not None:
            dtype = _dtype(dtype)
        elif isinstance(x, bool):
            dtype = torch.bool
        elif isinstance(x, int):
            dtype = torch.int64 if x < -(2**31) or x >= 2**31 else torch.int32
        else:
            dtype = _dtype(keras.config.floatx())
        return torch.as_tensor(x, dtype=dtype, device=keras_private.torch_device())
    return _keras_ops.convert_to_tensor(x, dtype)


def convert_all(values):
    """`[keras.ops.convert_to_tensor(v) for v in values]` (None stays None):
    a tensor moves to Keras's device where it is elsewhere, as Keras's
    conversion moves it; Keras's device is read once for the list."""
    device = _resolved(keras_private.torch_device())
    out = []
    for v in values:
        if isinstance(v, keras.Variable):
            v = v.value
        if v is None or (isinstance(v, torch.Tensor) and v.device == device):
            out.append(v)
        else:
            out.append(_keras_ops.convert_to_tensor(v))
    return out


def cast(x, dtype):
    if not isinstance(x, torch.Tensor):
        x = convert_to_tensor(x)
    dtype = _dtype(dtype)
    return x if x.dtype == dtype else x.to(dtype)


def _like(value, other):
    """`value` as a tensor; a Python scalar takes the dtype and device of `other`."""
    if isinstance(value, (torch.Tensor, keras.Variable)):
        return convert_to_tensor(value)
    other = convert_to_tensor(other)
    return torch.as_tensor(value, dtype=other.dtype, device=other.device)


def where(condition, x1, x2):
    return torch.where(convert_to_tensor(condition), _like(x1, x2), _like(x2, x1))


def stack(xs, axis=0):
    return torch.stack([convert_to_tensor(x) for x in xs], dim=axis)


def concatenate(xs, axis=0):
    return torch.cat([convert_to_tensor(x) for x in xs], dim=axis)


def logical_and(x1, x2):
    return torch.logical_and(convert_to_tensor(x1), convert_to_tensor(x2))


def logical_not(x):
    return torch.logical_not(convert_to_tensor(x))


def isfinite(x):
    return torch.isfinite(convert_to_tensor(x))


def sqrt(x):
    return torch.sqrt(convert_to_tensor(x))


def square(x):
    return torch.square(convert_to_tensor(x))


def sum(x):  # noqa: A001 (the name of the op it stands for)
    return torch.sum(convert_to_tensor(x))


def divide(x1, x2):
    return torch.divide(convert_to_tensor(x1), _like(x2, x1))


def maximum(x1, x2):
    return torch.maximum(convert_to_tensor(x1), _like(x2, x1))


def equal(x1, x2):
    return torch.eq(convert_to_tensor(x1), _like(x2, x1))


def mod(x1, x2):
    return torch.remainder(convert_to_tensor(x1), _like(x2, x1))


def zeros(shape, dtype="float32"):
    return _keras_ops.zeros(shape, dtype)


def zeros_like(x):
    return torch.zeros_like(convert_to_tensor(x))


def copy(x):
    """A copy of `x` (a variable's current value, read now), outside autograd."""
    return convert_to_tensor(x).detach().clone()


def _write(variable, value, in_place, keras_method):
    """Writes `value` into the variable with `in_place(target, value)`,
    outside autograd (as Keras does); in a `keras.StatelessScope`, calls
    Keras's own `keras_method` instead, whose write the scope keeps."""
    if keras_private.in_stateless_scope():
        keras_method(variable, value)
        return
    target, value = variable.value, convert_to_tensor(value)
    if target.shape != value.shape:
        raise ValueError(
            f"Cannot assign a value of shape {tuple(value.shape)} to the variable "
            f"{variable.path!r} of shape {tuple(target.shape)}."
        )
    with torch.no_grad():
        in_place(target, value)


def assign(variable, value):
    """`variable.assign(value)` for a value of the variable's shape."""
    _write(variable, value, torch.Tensor.copy_, keras.Variable.assign)


def assign_add(variable, value):
    """`variable.assign_add(value)` for a value of the variable's shape."""
    _write(variable, value, torch.Tensor.add_, keras.Variable.assign_add)
