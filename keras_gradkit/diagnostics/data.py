"""What is wrong with the data and the output before any gradient: inputs and
regression targets far from unit scale (`input_scales`), and an output
activation that does not fit its loss or its targets
(`output_loss_mismatches`). Both read the model's graph and one batch, on
the host, in NumPy; they judge nothing (`checks` turns them into findings).

Not findings, because Keras 3 (3.15) refuses them on all three backends:
class indices (shape `(N,)` or `(N, 1)`) into `categorical_crossentropy`
with a wider output, one-hot targets into `sparse_categorical_crossentropy`;
`diagnose`'s error about such a batch names the other loss
(`refused_targets`).
Checked although Keras warns (and trains on): a softmax over one unit, a
categorical cross-entropy over one unit, and, on TensorFlow only, sigmoid or
softmax probabilities into `from_logits=True`. Sparse labels out of range
fail on TensorFlow and PyTorch but cost zero on JAX, and binary targets
outside [0, 1] fail on PyTorch alone: checked, so every backend says the same.
"""

import math
import warnings
from typing import NamedTuple

import keras
import numpy as np

from keras_gradkit.backend import keras_private
from keras_gradkit.diagnostics import graph


class Scale(NamedTuple):
    """The scale of one input, or of the regression targets, over a batch.

    Features are the last axis; the other axes are pooled. Non-finite
    entries are left out.
    """

    name: str  # the model input's name (`input_layer`), or `targets`
    rms: float  # root mean square of the largest feature
    feature: int  # the index of that feature
    overall_rms: float  # root mean square of the whole array


class Mismatch(NamedTuple):
    """An output activation that does not fit its loss or its targets."""

    where: str  # the layer whose activation (or width) is at fault
    problem: str  # a short code: `softmax_one_unit`, `labels_out_of_range`, ...
    message: str  # what is wrong and the fix, as Keras code


class _Loss(NamedTuple):
    name: str  # the Keras loss function's name: `binary_crossentropy`
    kind: str  # `regression`, `binary`, `categorical`, `sparse`, `divergence`
    from_logits: bool
    axis: int
    ignore_class: object


class _Activation(NamedTuple):
    name: str  # `sigmoid`, `linear`, ...
    low: float  # the range of the activation's values
    high: float
    layer: object  # the layer whose activation it is
    softmax_size: object  # the size of the softmax's axes (None: unknown or no softmax)


# The first layers that make an input's scale their own business.
_NORMALIZING = tuple(
    getattr(keras.layers, name)
    for name in (
        "Normalization",
        "Rescaling",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "Embedding",
        "StringLookup",
        "IntegerLookup",
        "Hashing",
        "Discretization",
        "CategoryEncoding",
    )
)
# keras_gradkit.layers, known by name: diagnostics may not import layers.
_OUR_NORMALIZING = ("GroupNorm",)
_OUR_ENDING_IN_ACTIVATION = ("CosineDense", "CosineConv1D", "CosineConv2D")

# Layers whose output is their `activation` applied last (a recurrent
# layer's output stays within its activation's range, which holds 0).
_ENDING_IN_ACTIVATION = tuple(
    getattr(keras.layers, name)
    for name in (
        "Dense",
        "EinsumDense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "SeparableConv1D",
        "SeparableConv2D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "RNN",
    )
)
# Layers that are an activation and nothing else.
_ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.ReLU,
    keras.layers.ELU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
)
# Layers that only move values: the activation is that of their input.
_PASS_THROUGH = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Identity,
)

_INF = math.inf
# The range of each activation's values, the preferred name of a function first.
_RANGES = {
    "linear": (-_INF, _INF),
    "relu": (0.0, _INF),
    "relu6": (0.0, 6.0),
    "leaky_relu": (-_INF, _INF),
    "elu": (-1.0, _INF),
    "selu": (-1.7581, _INF),
    "celu": (-1.0, _INF),
    "gelu": (-0.17, _INF),
    "silu": (-0.2785, _INF),
    "hard_silu": (-0.375, _INF),
    "mish": (-0.3089, _INF),
    "softplus": (0.0, _INF),
    "squareplus": (0.0, _INF),
    "sparse_plus": (0.0, _INF),
    "exponential": (0.0, _INF),
    "softsign": (-1.0, 1.0),
    "tanh": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "sparse_sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "sparsemax": (0.0, 1.0),
    "log_sigmoid": (-_INF, 0.0),
    "log_softmax": (-_INF, 0.0),
}
_ACTIVATION_NAMES = {}
for _name in _RANGES:
    if hasattr(keras.activations, _name):
        _ACTIVATION_NAMES.setdefault(getattr(keras.activations, _name), _name)

# The losses these checks know: {function name: (kind, class name)}.
_LOSSES = {
    "mean_squared_error": ("regression", "MeanSquaredError"),
    "mean_absolute_error": ("regression", "MeanAbsoluteError"),
    "mean_absolute_percentage_error": ("regression", "MeanAbsolutePercentageError"),
    "mean_squared_logarithmic_error": ("regression", "MeanSquaredLogarithmicError"),
    "huber": ("regression", "Huber"),
    "log_cosh": ("regression", "LogCosh"),
    "binary_crossentropy": ("binary", "BinaryCrossentropy"),
    "binary_focal_crossentropy": ("binary", "BinaryFocalCrossentropy"),
    "categorical_crossentropy": ("categorical", "CategoricalCrossentropy"),
    "categorical_focal_crossentropy": ("categorical", "CategoricalFocalCrossentropy"),
    "sparse_categorical_crossentropy": ("sparse", "SparseCategoricalCrossentropy"),
    "kl_divergence": ("divergence", "KLDivergence"),
}
_PROBABILITY_KINDS = ("binary", "categorical", "sparse", "divergence")


# ------------------------------------------------------------------ scales
def input_scales(model, x, y):
    """`(scales, notes)`: the scale of each float model input and, when
    its loss is a regression loss, of each output's targets.

    An input is skipped, with a note, when its first layers normalize,
    rescale, embed or look it up (`Normalization`, `Rescaling`,
    `Embedding`, ...), or when the model takes it as integers. A model
    without a graph (subclassed) has `x` measured as given, integer arrays
    left out.

    Args:
        model: a Keras model.
        x: the inputs of one batch, anything `np.asarray` takes, or a
            list or dict of them.
        y: the targets of that batch, in the structure of the outputs.
    """
    scales, notes = [], []
    for name, tensor, array in _named_inputs(model, x, notes):
        reason = _unmeasured_input(model, tensor, array)
        scale = None if reason else _scale(name, array)
        if reason or scale is None:
            notes.append(f"Input `{name}` not measured: {reason or 'it holds no finite number'}.")
        else:
            scales.append(scale)
    keys = [key for key, _ in _outputs(model)] or _keys_of(y)
    losses = _losses(model, keys, notes)
    targets = _targets(y, keys, notes)
    for key in keys:
        loss = _loss_spec(losses.get(key))
        if loss is None or loss.kind != "regression" or key not in targets:
            continue
        name = "targets" if len(keys) == 1 else f"targets/{key}"
        scale = _scale(name, targets[key])
        if scale is None:
            notes.append(f"`{name}` not measured: no finite numbers.")
        else:
            scales.append(scale)
    return scales, notes


def _scale(name, array):
    """The `Scale` of a numeric array, or None if it holds no finite number."""
    a = np.asarray(array)
    if a.dtype.kind not in "iuf" or a.size == 0:
        return None
    a = a.astype(np.float64).reshape(-1, a.shape[-1] if a.ndim > 1 else 1)
    with np.errstate(over="ignore"):
        squares = a * a
    squares[~np.isfinite(squares)] = np.nan
    with warnings.catch_warnings():  # a feature without a finite entry: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        per_feature = np.nanmean(squares, axis=0)
    if np.all(np.isnan(per_feature)):
        return None
    feature = int(np.nanargmax(per_feature))
    overall = float(np.sqrt(np.nanmean(squares)))
    return Scale(name, float(np.sqrt(per_feature[feature])), feature, overall)


def _named_inputs(model, x, notes):
    """`(name, symbolic input or None, array)` for each input of `x`."""
    inputs = graph.model_inputs(model)
    if not inputs:
        if isinstance(x, dict):
            return [(str(key), None, value) for key, value in x.items()]
        if isinstance(x, (list, tuple)) and all(np.ndim(a) > 0 for a in x) and len(x) > 1:
            return [(f"x[{i}]", None, a) for i, a in enumerate(x)]
        return [("x", None, x)]
    arrays = None
    if len(inputs) == 1 and not isinstance(x, (dict, list, tuple)):
        arrays = [x]
    elif isinstance(x, dict) and all(t.name in x for t in inputs):
        arrays = [x[t.name] for t in inputs]  # Keras's own rule for a dict
    else:
        leaves = keras.tree.flatten(x)
        if len(leaves) == len(inputs):
            arrays = leaves
        elif len(inputs) == 1 and not isinstance(x, dict):
            arrays = [x]  # nested lists of numbers
    if arrays is None:
        notes.append(f"`x` does not match the model's {len(inputs)} inputs: not measured.")
        return []
    return [(_input_layer_name(t), t, a) for t, a in zip(inputs, arrays)]


def _input_layer_name(tensor):
    """The name of the `InputLayer` that made `tensor` (`input_layer`), or
    the tensor's own name."""
    # A Sequential's InputLayer is not among its public `layers`.
    operation = keras_private.producing_operation(tensor)
    return getattr(operation, "name", None) or tensor.name


def _unmeasured_input(model, tensor, array):
    """Why an input is not measured, or None."""
    first = _first_consumers(model, tensor)
    if first and all(_is_normalizing(layer) for layer in first):
        return f"it goes into {type(first[0]).__name__} `{first[0].name}` first"
    if tensor is not None and not keras.backend.is_float_dtype(tensor.dtype):
        return f"the model takes it as {tensor.dtype}"
    kind = np.asarray(array).dtype.kind
    if kind not in "iuf":
        return "it holds booleans" if kind == "b" else "it is not numeric"
    if tensor is None and kind != "f":
        return "it holds integers (token ids?)"
    return None


def _first_consumers(model, tensor):
    """The layers that take `tensor` first, looking into nested models; for
    a model without a graph, a Sequential's first layer."""
    if tensor is None:
        found = model.layers[:1] if isinstance(model, keras.Sequential) else []
    else:
        found = graph.consumers(model, tensor)
    layers = []
    for layer in found:
        if isinstance(layer, keras.Model):
            inner = graph.model_input(layer)
            if inner is not None or isinstance(layer, keras.Sequential):
                layers += _first_consumers(layer, inner)
                continue
        layers.append(layer)
    return layers


def _is_normalizing(layer):
    return isinstance(layer, _NORMALIZING) or _is_ours(layer, _OUR_NORMALIZING)


def _is_ours(layer, names):
    """Whether `layer` is (a subclass of) one of keras_gradkit's `names`."""
    return any(
        cls.__name__ in names and cls.__module__.startswith("keras_gradkit.layers")
        for cls in type(layer).__mro__
    )


# ----------------------------------------------------------------- outputs
def output_loss_mismatches(model, y):
    """`(mismatches, notes)`: each output activation that does not fit the
    loss compiled for it or its targets in `y`.

    Checks, per output: a softmax over an axis of size 1 (any loss); a
    (sparse) categorical cross-entropy over a single unit; sigmoid or
    softmax probabilities into a loss built with `from_logits=True`; an
    output that is not a probability into a probability loss with
    `from_logits=False`; sparse labels outside `[0, units)`; binary
    cross-entropy targets outside `[0, 1]`; regression targets outside the
    output activation's range. A model without a graph, an output whose
    loss or structure is not known, is skipped with a note.

    Args:
        model: a compiled Keras model.
        y: the targets of one batch, NumPy arrays in the structure of the
            outputs (an array, a list, or a dict keyed by output name).
    """
    mismatches, notes = [], []
    outputs = _outputs(model)
    if not outputs:
        notes.append(
            "The model has no graph (subclassed, or not built): its outputs are not checked."
        )
        return mismatches, notes
    keys = [key for key, _ in outputs]
    losses = _losses(model, keys, notes)
    targets = _targets(y, keys, notes)
    for key, tensor in outputs:
        loss = _loss_spec(losses.get(key))
        if loss is None:
            if losses.get(key) is not None:
                notes.append(f"Output `{key}`: loss {_describe(losses[key])} not known; skipped.")
            continue
        activation = _activation_of(model, tensor)
        if activation is None:
            notes.append(f"Output `{key}`: activation not known; only its targets are checked.")
        where = activation.layer.name if activation else _layer_name(model, tensor, key)
        values = _finite(targets.get(key))
        mismatches += _check_output(where, loss, activation, _width(tensor, loss.axis), values)
    return mismatches, notes


def refused_targets(model, y):
    """The fix, as a sentence, for targets that Keras refuses for the loss of
    a single-output model (see the module's docstring: Keras raises about
    shapes, and the fix is the other loss), or "" when none applies.

    Class indices (shape `(N,)` or `(N, 1)`, integers in `[0, units)`)
    into `categorical_crossentropy` over several units; one-hot rows into
    `sparse_categorical_crossentropy`; the class axis last. Never raises:
    it only adds to the message of an error being raised."""
    try:
        return _refused_targets(model, y)
    except Exception:
        return ""


def _refused_targets(model, y):
    outputs = _outputs(model)
    if len(outputs) != 1:
        return ""
    key, tensor = outputs[0]
    loss = _loss_spec(_losses(model, [key], []).get(key))
    targets = _targets(y, [key], []).get(key)
    if loss is None or targets is None or loss.axis != -1:
        return ""
    a = np.asarray(targets)
    width = _width(tensor, loss.axis)
    if a.dtype.kind not in "biuf" or not a.size or not a.ndim or not width or width < 2:
        return ""
    integers = bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))
    where = _layer_name(model, tensor, key)
    one_column = a.ndim == 1 or a.shape[-1] == 1
    if loss.name == "categorical_crossentropy" and one_column and integers:
        if a.min() >= 0 and a.max() < width:
            return (
                f"The targets look like class indices ({int(a.min())}..{int(a.max())}) for the "
                f'{width} units of `{where}`: use `loss="sparse_categorical_crossentropy"`, or '
                f"one-hot encode them with `keras.utils.to_categorical(y, {width})`."
            )
    rows = a.ndim == 2 and len(tensor.shape) == 2 and a.shape[-1] == width
    if loss.name == "sparse_categorical_crossentropy" and rows:
        if integers and a.min() >= 0 and a.max() <= 1 and np.all(a.sum(axis=-1) == 1):
            return (
                f"The targets look one-hot ({width} columns, one 1 per row) for `{where}`: use "
                f'`loss="categorical_crossentropy"`, or pass `y.argmax(axis=-1)` as the targets.'
            )
    return ""


def _check_output(where, loss, activation, width, targets):
    """The mismatches of one output, its targets' finite values (or None)."""
    if activation is not None and activation.softmax_size == 1:
        return [_softmax_one_unit(where, loss, activation)]
    if width == 1 and loss.kind in ("categorical", "sparse"):
        return [_categorical_one_unit(where, loss)]
    checks = []
    if activation is not None:
        checks += [
            _probabilities_as_logits(where, loss, activation),
            _unbounded_into_probability_loss(where, loss, activation),
        ]
    if targets is not None and targets.size:
        checks += [
            _labels_out_of_range(where, loss, width, targets),
            _binary_targets(where, loss, targets),
        ]
        if activation is not None:
            checks.append(_targets_outside_range(where, loss, activation, targets))
    return [mismatch for mismatch in checks if mismatch is not None]


def _softmax_one_unit(where, loss, activation):
    if loss.kind == "regression":
        fix = f"For regression, {_set_activation(activation, None)}."
    else:
        fix = (
            f"For a binary target, {_set_activation(activation, 'sigmoid')} with "
            '`loss="binary_crossentropy"`.'
        )
    message = (
        f"`{where}` applies softmax over an axis of size 1: its output is always 1, "
        f"whatever the input. {fix}"
    )
    return Mismatch(where, "softmax_one_unit", message)


def _categorical_one_unit(where, loss):
    message = (
        f"`{loss.name}` normalizes over the units of `{where}`, which has one: the loss is "
        'constant, its gradient zero. For a binary target use `loss="binary_crossentropy"` '
        "with a sigmoid output; for k classes, `units=k`."
    )
    return Mismatch(where, "categorical_one_unit", message)


def _probabilities_as_logits(where, loss, activation):
    if not (loss.from_logits and activation.low >= 0.0 and activation.high <= 1.0):
        return None
    second = "softmax" if loss.kind in ("categorical", "sparse") else "sigmoid"
    # TensorFlow's cross-entropies find the logits of Keras's sigmoid and softmax.
    if activation.name == second:
        effect = f"JAX and PyTorch apply {second} twice (TensorFlow reuses the logits)"
    else:
        effect = f"the loss applies {second} on top"
    message = (
        f"`{where}` outputs `{activation.name}` probabilities, yet `{loss.name}` has "
        f"`from_logits=True`: {effect}. "
        f"Either {_set_activation(activation, None)}, or keep `{activation.name}` with "
        f"`keras.losses.{_LOSSES[loss.name][1]}()`."
    )
    return Mismatch(where, "probabilities_as_logits", message)


def _unbounded_into_probability_loss(where, loss, activation):
    if loss.kind not in _PROBABILITY_KINDS or loss.from_logits:
        return None
    probabilities = activation.low >= 0.0 and activation.high <= 1.0
    # A categorical cross-entropy divides the outputs by their sum first:
    # positive outputs (exponential, softplus) then are probabilities.
    positive = loss.kind in ("categorical", "sparse") and activation.name in (
        "exponential",
        "softplus",
    )
    if probabilities or positive:
        return None
    fix = _set_activation(activation, "sigmoid" if loss.kind == "binary" else "softmax")
    if loss.kind != "divergence":
        fix = f"use `loss=keras.losses.{_LOSSES[loss.name][1]}(from_logits=True)`, or {fix}"
    message = (
        f"`{where}` outputs `{activation.name}` values, but `{loss.name}` takes them as "
        f"probabilities and clips them into (0, 1), where the gradient is zero. "
        f"{fix[0].upper()}{fix[1:]}."
    )
    return Mismatch(where, "unbounded_into_probability_loss", message)


def _set_activation(activation, value):
    """The fix, as Keras code, that gives the output the activation `value`."""
    layer = activation.layer
    if isinstance(layer, _ACTIVATION_LAYERS):
        if value is None:
            return f"remove the `{layer.name}` layer"
        return f'replace the `{layer.name}` layer with `keras.layers.Activation("{value}")`'
    return "set `activation=None`" if value is None else f'set `activation="{value}"`'


def _labels_out_of_range(where, loss, width, labels):
    if loss.kind != "sparse" or width is None:
        return None
    if loss.ignore_class is not None:
        labels = labels[labels != loss.ignore_class]
    outside = labels[(labels < 0) | (labels >= width)]
    if not outside.size:
        return None
    low, high = int(labels.min()), int(labels.max())
    fix = f"Use `units={high + 1}` or remap the labels to 0..{width - 1}"
    if outside.max() < 0 and np.unique(outside).size == 1:
        fix = f"Skip them with `keras.losses.SparseCategoricalCrossentropy(ignore_class={low})`"
    message = (
        f"{outside.size} of {labels.size} labels for `{loss.name}` lie outside [0, {width}), "
        f"the units of `{where}` (labels {low}..{high}): JAX gives them zero loss, "
        f"TensorFlow and PyTorch fail. {fix}."
    )
    return Mismatch(where, "labels_out_of_range", message)


def _binary_targets(where, loss, targets):
    if loss.kind != "binary":
        return None
    low, high = float(targets.min()), float(targets.max())
    if low >= 0.0 and high <= 1.0:
        return None
    values = np.unique(targets)
    if values.size == 2:
        shift = f"y + {-low:g}" if low < 0 else f"y - {low:g}"
        fix = f"Map them to 0 and 1: `y = ({shift}) / {high - low:g}`."
    elif low >= 0 and np.all(values == np.round(values)):
        fix = (
            f'For class indices use `units={int(high) + 1}`, `activation="softmax"` '
            'and `loss="sparse_categorical_crossentropy"`.'
        )
    else:
        fix = "Rescale them into [0, 1]."
    message = (
        f"The `{loss.name}` targets of `{where}` lie in [{low:g}, {high:g}], not in [0, 1]: "
        f"the loss is then unbounded below and drives the output to saturate. {fix}"
    )
    return Mismatch(where, "binary_targets_not_0_1", message)


def _targets_outside_range(where, loss, activation, targets):
    if loss.kind != "regression":
        return None
    low, high = activation.low, activation.high
    outside = targets[
        (targets < low - 1e-6 * max(1.0, abs(low))) | (targets > high + 1e-6 * max(1.0, abs(high)))
    ]
    if not outside.size:
        return None
    fix = _set_activation(activation, None)
    message = (
        f"`{where}` uses `{activation.name}`, whose outputs lie in {_interval(low, high)}, but "
        f"{outside.size} of {targets.size} `{loss.name}` targets (from {targets.min():.3g} to "
        f"{targets.max():.3g}) lie outside it, out of reach. {fix[0].upper()}{fix[1:]}, "
        "or scale the targets into that range."
    )
    return Mismatch(where, "targets_outside_output_range", message)


def _interval(low, high):
    left = "(-inf" if low == -_INF else f"[{low:g}"
    right = "inf)" if high == _INF else f"{high:g}]"
    return f"{left}, {right}"


# ------------------------------------------------------- graph and compile
def _outputs(model):
    """`(key, symbolic output)` per output: `key` is the name its loss and
    targets go by (the dict key, else Keras's output name). None without a
    graph."""
    if not graph.model_inputs(model):
        return []
    structure = graph.model_output(model)
    if isinstance(structure, dict):
        return list(structure.items())
    tensors = keras.tree.flatten(structure)
    names = getattr(model, "output_names", None)
    if not names or len(names) != len(tensors):
        names = [_layer_name(model, t, f"output_{i}") for i, t in enumerate(tensors)]
    return list(zip(names, tensors))


def _keys_of(y):
    """Output keys for a model without a graph, from the structure of `y`."""
    if isinstance(y, dict):
        return list(y)
    if isinstance(y, (list, tuple)) and len(y) > 1 and all(np.ndim(a) > 0 for a in y):
        return [f"output_{i}" for i in range(len(y))]
    return ["output"]


def _losses(model, keys, notes):
    """`{key: the loss the user compiled for that output}`."""
    loss = getattr(model, "loss", None)  # what the user gave `compile`
    if loss is None:
        notes.append("The model is not compiled with a loss: its targets are not read.")
        return {}
    if isinstance(loss, dict):
        if len(keys) == 1 and len(loss) == 1:
            return {keys[0]: next(iter(loss.values()))}
        return {key: loss.get(key) for key in keys}
    if isinstance(loss, (list, tuple)):
        if len(loss) == len(keys):
            return dict(zip(keys, loss))
        notes.append(f"{len(loss)} losses for {len(keys)} outputs: the losses are not read.")
        return {}
    return {key: loss for key in keys}


def _targets(y, keys, notes):
    """`{key: the targets of that output}`, from `y`."""
    if y is None:
        return {}
    if len(keys) == 1:
        if isinstance(y, dict) and len(y) == 1:
            y = next(iter(y.values()))
        elif isinstance(y, (list, tuple)) and len(y) == 1 and np.ndim(y[0]) > 0:
            y = y[0]
        if isinstance(y, dict):
            notes.append("`y` does not match the model's output: targets not read.")
            return {}
        return {keys[0]: y}
    if isinstance(y, dict):
        return {key: y[key] for key in keys if key in y}
    if isinstance(y, (list, tuple)) and len(y) == len(keys):
        return dict(zip(keys, y))
    notes.append(f"`y` does not match the model's {len(keys)} outputs: targets not read.")
    return {}


def _loss_spec(loss):
    """The `_Loss` of what the user passed for one output, or None."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return None
    if isinstance(loss, keras.losses.Loss):
        name = _class_name(loss) or _function_name(getattr(loss, "fn", None))
        config = loss.get_config() if name else {}
    else:
        name, config = _function_name(loss), {}
    if name is None:
        return None
    return _Loss(
        name,
        _LOSSES[name][0],
        bool(config.get("from_logits", False)),
        config.get("axis", -1),
        config.get("ignore_class"),
    )


def _class_name(loss):
    """The function name of the Keras loss class `loss` is (an instance of)."""
    for cls in type(loss).__mro__:
        for name, (_, class_name) in _LOSSES.items():
            if cls.__name__ == class_name and getattr(keras.losses, class_name) is cls:
                return name
    return None


def _function_name(function):
    return next((name for name in _LOSSES if getattr(keras.losses, name) is function), None)


def _describe(loss):
    return f"`{getattr(loss, '__name__', type(loss).__name__)}`"


def _activation_of(model, tensor):
    """The `_Activation` that makes `tensor`, or None when not known."""
    layer, index = _producer(model, tensor)
    while isinstance(layer, _PASS_THROUGH):
        layer, index = _producer(model, layer.input)
    if isinstance(layer, keras.Model):  # its own outputs, not those of its call here
        inner = list(getattr(layer, "outputs", None) or [])
        return _activation_of(layer, inner[index]) if index < len(inner) else None
    if layer is None:
        return None
    return _activation_of_layer(layer)


def _activation_of_layer(layer):
    if isinstance(layer, keras.layers.Softmax):
        return _make_activation("softmax", layer, layer.axis)
    if isinstance(layer, keras.layers.ReLU):
        low = 0.0 if not layer.negative_slope else -_INF
        high = _INF if layer.max_value is None else float(layer.max_value)
        return _Activation("relu", low, high, layer, None)
    if isinstance(layer, keras.layers.ELU):
        return _Activation("elu", -float(layer.alpha), _INF, layer, None)
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU)):
        return _Activation(type(layer).__name__, -_INF, _INF, layer, None)
    trusted = isinstance(layer, (keras.layers.Activation, *_ENDING_IN_ACTIVATION))
    if trusted or _is_ours(layer, _OUR_ENDING_IN_ACTIVATION):
        name = _ACTIVATION_NAMES.get(getattr(layer, "activation", None))
        return _make_activation(name, layer, -1) if name else None
    return None


def _make_activation(name, layer, axis):
    softmax_size = None
    if name == "softmax":
        shape = layer.output.shape
        sizes = [shape[a] for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
        softmax_size = None if None in sizes else math.prod(sizes)
    return _Activation(name, *_RANGES[name], layer, softmax_size)


def _producer(model, tensor):
    """`(layer, index)`: the top-level layer of `model` whose output
    `index` is `tensor`, or `(None, 0)`."""
    for layer in model.layers:
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a shared layer has several
            continue
        for index, output in enumerate(outputs):
            if output is tensor:
                return layer, index
    return None, 0


def _layer_name(model, tensor, default):
    layer, _ = _producer(model, tensor)
    return layer.name if layer is not None else default


def _width(tensor, axis):
    shape = tensor.shape
    return shape[axis] if len(shape) and -len(shape) <= axis < len(shape) else None


def _finite(targets):
    """The finite values of a numeric array, as float64; None otherwise."""
    if targets is None:
        return None
    a = np.asarray(targets)
    if a.dtype.kind not in "biuf":
        return None
    a = a.astype(np.float64).ravel()
    return a[np.isfinite(a)]
