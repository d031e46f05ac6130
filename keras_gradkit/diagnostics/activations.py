"""What a model's activations do on one batch: dead ReLU units, saturated
sigmoid and tanh units, and the first layer whose output is not finite.

The measures of the gradient doctor's activation checks (issue 32); the
checks turn them into findings. `measure_activations(model, x)` runs the
model forward once on the batch `x`, in a `keras.StatelessScope`: weights,
moving statistics (`BatchNormalization`) and seed generators keep their
values. The pass is traced by the backend (the time probe's `Function`)
and the trace is kept for the model, so later calls on batches of the same
shapes reuse it: an eager pass costs several training steps on TensorFlow
and JAX (a recurrent layer runs its loop op by op). A model that cannot be
traced runs eagerly. An unbuilt model is first built on the batch's first
example, in a scope of its own. A caller that runs the model anyway can
measure that very pass (`measured_call`, then `assemble`): `diagnose`
measures the forward pass of the weights' gradient.

Each layer's output is read by an instance-level wrapper of its `call`
(`functools.wraps`, so Keras still reads the signature), removed again when
the pass ends, whether it succeeded or not. Every layer of the model is
wrapped, nested models and the layers of a subclassed model (attributes)
included, except the cells of recurrent layers: a cell runs inside the
layer's loop (`lax.scan`, `tf.while_loop`), one step at a time and often
traced.

Definitions:

- Call order: the order in which the layers' calls return, so a nested
  model comes after its own layers. A layer called several times (shared)
  is measured over all its calls together, as if their outputs were
  concatenated along the batch (a call whose output has another number of
  units than the first is left out, with a note); its place is that of its
  first call.
- The activation of a layer: `layer.activation`'s `__name__` (`Dense`,
  `Conv*`, `keras.layers.Activation`); `"relu"` for `keras.layers.ReLU`
  with `negative_slope == 0` (whatever its `max_value` and `threshold`),
  `"leaky_relu"` otherwise; `"leaky_relu"`, `"elu"`, `"prelu"`, `"softmax"`
  for those layers. A `keras.layers.RNN` (`SimpleRNN`,
  `keras_gradkit.layers.IndRNN`) is measured on its output with its cell's
  activation (`layer.cell.activation`), for saturation only: dead units
  are not judged in recurrent layers (a ReLU recurrence that trains well on
  non-negative sequences, as `make demo`'s IndRNN on the adding problem,
  has 70-75% of its units at 0 on a whole batch). The gates of `LSTM`, `GRU` and other
  cells with a `recurrent_activation` are not measured: their output is a
  product of activations (a note says so). A wrapper whose wrapped layer is
  never called (`keras_gradkit.layers.WeightNormalization`) is measured with
  the wrapped layer's activation; `Bidirectional` through its two layers.
  A layer that holds other layers (a block such as
  `keras_gradkit.layers.ResidualIndRNN`) is not measured itself, its layers
  are.
- Units: the channel axis of the output, the last one, or axis 1 when the
  layer (for a separate activation layer: its source) has
  `data_format == "channels_first"`. A layer with several outputs (an RNN
  with `return_state=True`) is measured on its first one.
- Dead units (`"relu"`, `"relu6"`, `keras.layers.ReLU` with
  `negative_slope == 0`): a unit is dead when its output is exactly 0 for
  every sample and every position (spatial, time) of the batch;
  `dead_fraction` is the number of dead units over `units`.
- Saturation (`"sigmoid"`, `"tanh"`, `"hard_sigmoid"`, `"softsign"`; not
  softmax): an output entry y is saturated when the activation's derivative
  there is below 1% of its largest derivative, computed from y: sigmoid
  `y (1 - y) < 0.0025`, tanh `1 - y^2 < 0.01`, hard sigmoid `y <= 0` or
  `y >= 1`, softsign `(1 - |y|)^2 < 0.01`. `saturated_fraction` is the
  mean over all entries (samples x positions x units).
- Masks: the model is called as Keras calls it, masks included; the steps
  an RNN outputs for masked steps are measured with the others.
- Output: a layer is an output when a tensor it returns is one the model
  returns (the very tensor: a layer that passes its input on unchanged,
  such as `Dropout` in inference, leaves the layer before it an output),
  and so are the layers that an output `TimeDistributed` or
  `Bidirectional` runs.
- Source of a separate activation layer: the layer that produced its input.
  In a functional or Sequential model this is read from the graph (through
  nested models, to the innermost layer), so a dtype cast on the way
  (mixed precision) does not hide it; in a subclassed model it is the layer
  whose call returned the very tensor the activation took. It is the layer
  right before: in `Dense -> BatchNormalization -> ReLU` the source is the
  `BatchNormalization`. None for an activation on the model input.
- Non-finite: the first layer, in call order, one of whose float outputs
  holds NaN or inf, with its activation and its kernel initializer (for a
  separate activation layer, its source's).

The reductions run on the device in float32 (float16 and bfloat16 outputs
are cast first, so mixed precision works; the finiteness check reads them
as they are, since a float16 entry is finite exactly when its cast is);
then a few numbers per layer go to the host. The layers' outputs are held
until the pass has been measured, and nothing is kept after the call.
"""

import functools
from typing import NamedTuple

import keras
from keras import ops

from keras_gradkit import _cache, backend
from keras_gradkit.backend import keras_private
from keras_gradkit.backend.common import hooks
from keras_gradkit.diagnostics import graph

RELU_FAMILY = ("relu", "relu6")


def _derivative_below(threshold, derivative):
    return lambda y: ops.less(derivative(y), threshold)


# An entry is saturated where the derivative, from the output y, is below 1%
# of the activation's largest derivative (sigmoid's is 1/4).
SATURATION = {
    "sigmoid": _derivative_below(0.0025, lambda y: ops.multiply(y, 1.0 - y)),
    "tanh": _derivative_below(0.01, lambda y: 1.0 - ops.square(y)),
    "hard_sigmoid": lambda y: ops.logical_or(ops.less_equal(y, 0.0), ops.greater_equal(y, 1.0)),
    "softsign": _derivative_below(0.01, lambda y: ops.square(1.0 - ops.abs(y))),
}

_ACTIVATION_LAYERS = (
    (keras.layers.LeakyReLU, "leaky_relu"),
    (keras.layers.ELU, "elu"),
    (keras.layers.PReLU, "prelu"),
    (keras.layers.Softmax, "softmax"),
)


class LayerActivation(NamedTuple):
    """The activation measures of one layer.

    Attributes:
        layer: str, the layer's name (for the activation of a recurrent
            cell: the recurrent layer's).
        activation: str, the activation's name (`"relu"`, `"sigmoid"`,
            `"tanh"`, `"linear"`, ...).
        units: int, the number of units (channels) measured.
        dead_fraction: float, the fraction of units whose output is 0 for
            the whole batch; None outside the ReLU family.
        saturated_fraction: float, the fraction of output entries where the
            activation's derivative is below 1% of its largest; None
            outside sigmoid, tanh, hard sigmoid and softsign.
        is_output: bool, whether the layer's output is (part of) a model
            output.
        separate: bool, whether the activation is a layer of its own
            (`keras.layers.Activation`, `ReLU`, ...) rather than the
            `activation=` of a layer.
        source: str or None, for a separate activation layer, the name of
            the layer whose output it takes (None when unknown or for the
            model input); None otherwise.
    """

    layer: str
    activation: str
    units: int
    dead_fraction: float | None
    saturated_fraction: float | None
    is_output: bool
    separate: bool
    source: str | None


class ActivationMeasures(NamedTuple):
    """What `measure_activations` found on one batch.

    Attributes:
        layers: list of `LayerActivation`, one per layer with an activation,
            in call order.
        non_finite_layer: str or None, the first layer, in call order, whose
            output holds NaN or inf.
        non_finite_activation: str or None, that layer's activation name.
        non_finite_initializer: str or None, the class name of that layer's
            kernel initializer (for a separate activation layer, its
            source's), e.g. `"RandomNormal"`.
        notes: list of str, what could not be measured and why.
    """

    layers: list
    non_finite_layer: str | None
    non_finite_activation: str | None
    non_finite_initializer: str | None
    notes: list


class _Call(NamedTuple):
    """One call of a hooked layer: its first input tensor and its outputs."""

    layer: object
    input: object
    outputs: list


class _Kind(NamedTuple):
    """The activation that produces a layer's output; `origin` is the layer
    whose `data_format` and kernel initializer apply (the wrapped layer of
    a wrapper, the cell of an RNN)."""

    name: str
    separate: bool
    origin: object


def measure_activations(model, x, training=True, eager=False):
    """Measures the activations of `model` on the batch `x` (see the module
    docstring for the definitions).

    Args:
        model: a Keras model (Sequential, functional or subclassed).
        x: the inputs of one batch, an array or a structure of arrays, as
            the model takes them.
        training: bool, the mode of the forward pass. Defaults to `True`,
            as in a train step (dropout on, batch statistics).
        eager: bool, run the pass op by op instead of traced. A traced
            TensorFlow pass fuses `Dense`'s ReLU into its matmul, which
            turns a NaN into 0, so the first non-finite layer is found
            eagerly: callers ask for it when the gradient is not finite.
            Defaults to `False`.

    Returns:
        An `ActivationMeasures`.
    """
    if not model.built:
        _build(model, x, training)
    if eager:
        return _eager_measure(model, x, training)
    key = (training, tuple(id(v) for v in model.variables))
    traced = _cache.get(model, "activations_pass")
    if traced is None or traced.key != key:
        traced = _cache.put(model, "activations_pass", _TracedPass(model, training, key))
    if traced.usable:
        try:
            return assemble(*traced(x))
        except Exception:
            traced.usable = False  # it runs eagerly only: no new trace at each call
    return _eager_measure(model, x, training)


def _eager_measure(model, x, training):
    with backend.get("probe").kept_random_state(), keras.StatelessScope():
        return assemble(*_reduce(model, *_recorded_pass(model, x, training)))


def _recorded_pass(model, x, training):
    """`(calls, model outputs)` of one pass of `model` on `x`, each hooked
    layer's call recorded as it returns. Run inside a `keras.StatelessScope`
    (a scope of its own would hide the traced function's variable values
    on JAX: a variable it does not map reads its value at trace time)."""
    calls, removals = [], []
    try:
        for layer in _hooked_layers(model):
            removals.append(hooks.wrap_method(layer, "call", _recording(layer, calls)))
        outputs = model(x, training=training)
    finally:
        for remove in reversed(removals):
            remove()
    return calls, outputs


def measured_call(model, x, training=True):
    """`(outputs, plan, counts)`: `model(x, training=training)`, with the
    activation reductions of that very pass, for a caller that runs the
    pass for its own purpose (`keras_gradkit.diagnose`'s gradient pass, so
    the activations cost no pass of their own). Call it where the model
    would be called: inside the caller's `keras.StatelessScope`, traced or
    differentiated or not. `assemble(plan, counts)` makes the
    `ActivationMeasures` once the counts are on the host."""
    calls, outputs = _recorded_pass(model, x, training)
    plan, counts = _reduce(model, calls, outputs)
    return outputs, plan, counts


class _TracedPass:
    """The pass and its reductions (`_reduce`) traced by the backend: each
    call returns the plan read while tracing and the counts of this call,
    one small integer tensor, so the layers' outputs never leave the
    traced function."""

    def __init__(self, model, training, key):
        self.model = model
        self.training = training
        self.key = key
        self.usable = True
        self._plan = None
        self._function = backend.get("probe").Function(self._run, model.variables)

    def _run(self, x):
        self._plan, counts = _reduce(self.model, *_recorded_pass(self.model, x, self.training))
        return counts

    def __call__(self, x):
        counts = self._function(keras.tree.map_structure(ops.convert_to_tensor, x))
        return self._plan, counts


def _build(model, x, training):
    """Builds an unbuilt model on the batch's first example, changing no variable."""
    first = keras.tree.map_structure(lambda a: a[:1], x)
    with backend.get("probe").kept_random_state(), keras.StatelessScope():
        model(first, training=training)


def _hooked_layers(model):
    """The model and every layer in it, less the cells of recurrent layers
    and the layers inside them."""
    everything = keras_private.flatten_layers(model)
    in_cells = {
        id(inner)
        for layer in everything
        if isinstance(layer, keras.layers.RNN)
        for inner in keras_private.flatten_layers(layer.cell)
    }
    return [layer for layer in everything if id(layer) not in in_cells]


def _recording(layer, calls):
    """A `make_wrapper` for `hooks.wrap_method`: the wrapped `call` appends
    a `_Call` to `calls` when it returns."""

    def make_wrapper(original):
        @functools.wraps(original)
        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            inputs = _tensors(args[0] if args else kwargs.get("inputs"))
            calls.append(_Call(layer, inputs[0] if inputs else None, _tensors(outputs)))
            return outputs

        return call

    return make_wrapper


def _tensors(structure):
    return [t for t in keras.tree.flatten(structure) if hasattr(t, "shape") and hasattr(t, "dtype")]


class _Plan(NamedTuple):
    """What `_reduce` read from the layers and shapes: per measured layer a
    `LayerActivation` without its fraction and the field that takes it;
    per call with a float output, what names it if it is the first
    non-finite one; the notes."""

    layers: list
    calls: list
    notes: list


def _reduce(model, calls, model_outputs):
    """`(plan, counts)` of one recorded pass: `counts` is one int32 vector,
    per measured layer its fraction's numerator and denominator (dead
    units and units, or saturated entries and entries), then per call of
    `plan.calls` 1 where its outputs are finite, else 0."""
    notes, layers, numbers = [], [], []
    by_layer = {}
    for position, call in enumerate(calls):
        by_layer.setdefault(id(call.layer), []).append(position)
    called = set(by_layer)
    producers = _graph_producers(model)
    outputs = _output_layers(calls, _tensors(model_outputs))
    for positions in by_layer.values():
        layer = calls[positions[0]].layer
        kind = _activation_of(layer, called, notes)
        if kind is None:
            continue
        source = _source(layer, kind, calls, positions[0], producers)
        layer_calls = [calls[p] for p in positions]
        is_output = id(layer) in outputs
        try:
            entry, fraction = _layer_activation(kind, layer_calls, source, is_output, notes)
        except Exception as e:  # an output that is no tensor
            reason = (str(e).strip().splitlines() or [""])[0]
            notes.append(f"{layer.name}: not measured ({type(e).__name__}: {reason})")
            continue
        layers.append((entry, None if fraction is None else fraction[0]))
        numbers.extend(fraction[1:] if fraction else [])
    named, flags = _finite_flags(calls, called, producers)
    counts = [ops.cast(n, "int32") for n in numbers] + [ops.cast(f, "int32") for f in flags]
    stacked = ops.stack(counts) if counts else ops.zeros((0,), "int32")
    return _Plan(layers, named, notes), stacked


def assemble(plan, counts):
    """The `ActivationMeasures` of a plan and its counts (to the host here)."""
    counts = ops.convert_to_numpy(counts).tolist()
    found, index = [], 0
    for entry, field in plan.layers:
        if field is not None:
            numerator, denominator = counts[index : index + 2]
            index += 2
            entry = entry._replace(**{field: numerator / denominator if denominator else 0.0})
        found.append(entry)
    finite = counts[index:]
    bad = [named for named, flag in zip(plan.calls, finite) if not flag]
    return ActivationMeasures(found, *(bad[0] if bad else (None, None, None)), list(plan.notes))


def _output_layers(calls, model_outputs):
    """The ids of the layers whose output is (part of) a model output, and
    of the layers such a wrapper runs (`TimeDistributed`'s, `Bidirectional`'s
    two), whose own outputs the wrapper reshapes or joins."""
    found = set()
    for call in reversed(calls):  # a wrapper returns after the layers it runs
        if id(call.layer) in found or any(o is m for o in call.outputs for m in model_outputs):
            found.add(id(call.layer))
            found.update(id(inner) for inner in _wrapped(call.layer))
    return found


def _wrapped(layer):
    if not isinstance(layer, (keras.layers.Wrapper, keras.layers.Bidirectional)):
        return []
    names = ("layer", "forward_layer", "backward_layer")
    return [getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), keras.Layer)]


def _activation_of(layer, called, notes):
    """The `_Kind` of the activation that produces `layer`'s output, or None."""
    if isinstance(layer, keras.layers.RNN):
        if hasattr(layer.cell, "recurrent_activation"):
            notes.append(
                f"{layer.name}: the gates of {type(layer).__name__} are not measured (its "
                "output is a product of activations)"
            )
            return None
        return _kind(getattr(layer.cell, "activation", None), False, layer.cell)
    if isinstance(layer, keras.layers.ReLU):
        return _Kind("relu" if layer.negative_slope == 0 else "leaky_relu", True, layer)
    for cls, name in _ACTIVATION_LAYERS:
        if isinstance(layer, cls):
            return _Kind(name, True, layer)
    if isinstance(layer, keras.layers.Activation):
        return _kind(layer.activation, True, layer)
    if isinstance(layer, keras.layers.Bidirectional):
        return None  # measured through its forward and backward layers
    if isinstance(layer, keras.layers.Wrapper):
        inner = layer.layer
        return None if id(inner) in called else _activation_of(inner, called, notes)
    if len(keras_private.flatten_layers(layer)) > 1:
        return None  # a block: its own layers are measured
    return _kind(getattr(layer, "activation", None), False, layer)


def _kind(function, separate, origin):
    if not callable(function):
        return None
    return _Kind(getattr(function, "__name__", type(function).__name__), separate, origin)


def _layer_activation(kind, layer_calls, source, is_output, notes):
    """`(entry, fraction)` of one layer over its calls: its `LayerActivation`
    with no fraction yet, and None or `(field, numerator, denominator)`,
    tensors or ints, of its dead or saturated fraction."""
    layer = layer_calls[0].layer
    outputs = [c.outputs[0] for c in layer_calls if c.outputs]
    rank = len(outputs[0].shape)
    if rank < 2:
        raise ValueError(f"its output has rank {rank}, with no unit axis")
    origin = source if kind.separate and source is not None else kind.origin
    axis = 1 if getattr(origin, "data_format", None) == "channels_first" and rank > 2 else -1
    units = int(outputs[0].shape[axis])
    kept = [y for y in outputs if len(y.shape) == rank and int(y.shape[axis]) == units]
    if len(kept) < len(outputs):
        notes.append(
            f"{layer.name}: {len(outputs) - len(kept)} of its {len(outputs)} calls output "
            f"another number of units than {units}, and are left out"
        )
    kept = [_float32(y) for y in kept]
    fraction = None
    if kind.name in RELU_FAMILY and isinstance(layer, keras.layers.RNN):
        # Measured on make demo's IndRNN, which trains well on the adding
        # problem: 70-75% of its units are 0 on a whole probe batch (the
        # inputs are non-negative). A recurrent layer's zero units are not a
        # sign of a bug as a Dense layer's are.
        notes.append(f"{layer.name}: dead units are not judged in recurrent layers")
    elif kind.name in RELU_FAMILY:
        alive = ops.sum(ops.cast(_alive_units(kept, axis % rank), "int32"))
        fraction = ("dead_fraction", units - alive, units)
    elif kind.name in SATURATION:
        counts = [ops.sum(ops.cast(SATURATION[kind.name](y), "int32")) for y in kept]
        entries = [ops.size(y) for y in kept]
        fraction = ("saturated_fraction", _total(counts), _total(entries))
    source_name = source.name if kind.separate and source is not None else None
    entry = LayerActivation(
        layer.name, kind.name, units, None, None, is_output, kind.separate, source_name
    )
    return entry, fraction


def _total(values):
    total = values[0]
    for value in values[1:]:
        total = ops.add(total, value)
    return total


def _alive_units(outputs, axis):
    """Per unit, whether any output entry of any call is not 0."""
    alive = None
    for y in outputs:
        others = tuple(i for i in range(len(y.shape)) if i != axis)
        nonzero = ops.any(ops.not_equal(y, 0.0), axis=others)
        alive = nonzero if alive is None else ops.logical_or(alive, nonzero)
    return alive


def _float32(tensor):
    if keras.backend.standardize_dtype(tensor.dtype) == "float32":
        return tensor  # no op: under JAX each op compiles once per shape
    return ops.cast(tensor, "float32")


def _finite_flags(calls, called, producers):
    """`(named, flags)`: per call with an output the finiteness check can
    read, `(layer, activation, initializer)` naming it, and a boolean
    tensor, whether all its float outputs are finite."""
    named, flags = [], []
    for position, call in enumerate(calls):
        try:
            flag = _all_finite(call.outputs)
        except Exception:  # no tensor: `_reduce` notes it for a layer it measures
            continue
        layer = call.layer
        kind = _activation_of(layer, called, [])
        if kind is None:
            named.append((layer.name, None, _initializer_name(layer)))
        else:
            source = _source(layer, kind, calls, position, producers)
            named.append((layer.name, kind.name, _initializer_name(source or kind.origin)))
        flags.append(flag)
    return named, flags


def _all_finite(tensors):
    """Whether every float tensor of `tensors` is finite, as a boolean tensor
    (a float16 entry is finite exactly when its float32 cast is: no cast)."""
    flags = [
        ops.all(ops.isfinite(t))
        for t in tensors
        if keras.backend.is_float_dtype(keras.backend.standardize_dtype(t.dtype))
    ]
    if len(flags) == 1:
        return flags[0]
    return ops.all(ops.stack(flags)) if flags else ops.convert_to_tensor(True)


def _initializer_name(layer):
    for holder in (layer, getattr(layer, "cell", None)):
        initializer = getattr(holder, "kernel_initializer", None)
        if initializer is not None:
            if isinstance(initializer, keras.initializers.Initializer):
                return type(initializer).__name__
            return getattr(initializer, "__name__", type(initializer).__name__)
    return None


# ------------------------------------------------------------------ sources
def _source(layer, kind, calls, position, producers):
    """The layer whose output a separate activation layer takes: from the
    model's graph where there is one, else the first layer whose output
    was the very tensor this call took; None for other layers."""
    if not kind.separate:
        return None
    try:
        inputs = keras.tree.flatten(layer.input)
    except (AttributeError, ValueError):  # not in a graph (subclassed model)
        inputs = []
    found = _producer(inputs[0], producers) if inputs else None
    if found is not None:
        return found
    taken = calls[position].input
    for call in calls[:position]:
        if taken is not None and any(o is taken for o in call.outputs):
            return call.layer
    return None


def _graph_producers(model):
    """`{id(symbolic tensor): (layer, output index)}` over the graphs of a
    functional or Sequential model and of the graph models nested in it."""
    found = {}

    def visit(m):
        if not graph.model_inputs(m):
            return
        for layer in m.layers:
            try:
                outputs = keras.tree.flatten(layer.output)
            except (AttributeError, ValueError):
                continue
            for index, tensor in enumerate(outputs):
                found.setdefault(id(tensor), (layer, index))
            if isinstance(layer, keras.Model):
                visit(layer)

    visit(model)
    return found


def _producer(tensor, producers):
    """The innermost layer that produces the symbolic `tensor`, or None."""
    entry = producers.get(id(tensor))
    while entry is not None:
        layer, index = entry
        inner = graph.model_inputs(layer) and keras.tree.flatten(graph.model_output(layer))
        if not isinstance(layer, keras.Model) or not inner:
            return layer
        entry = producers.get(id(inner[index]))
    return None
