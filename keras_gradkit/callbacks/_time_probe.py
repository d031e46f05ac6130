"""Gradient of the loss with respect to each time step of a sequence (private).

Used by `GradientBoard(time_probe=(x, y))`. Runs outside the train step, on a
small fixed batch. The backend's part (`keras_gradkit.backend.<name>.probe`)
traces the gradient once per model and probe on TensorFlow and JAX, and runs
it eagerly on PyTorch; every call reads the model's current weights and
assigns no variable.
"""

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gradkit import backend
from keras_gradkit.callbacks import _plots

REACH_FRACTION = 1e-3
_SHAPES = "float sequences of shape (batch, timesteps, features) or integer token ids of shape (batch, timesteps)"


def validate_time_probe(time_probe):
    """Checks the `time_probe` argument of `GradientBoard`.

    Args:
        time_probe: None, or a tuple `(x, y)`: `x` float sequences of shape
            `(batch, timesteps, features)` or integer token ids of shape
            `(batch, timesteps)`; `y` their targets (an array or a structure
            of arrays), each with `batch` rows.

    Returns:
        None, or `(x, y)` as NumPy arrays (`y` keeps its structure).

    Raises:
        TypeError: `time_probe` is not a tuple or list, or `x` is not an array.
        ValueError: `x` is neither of the two kinds above (an image batch, a
            float matrix, integer sequences with features), it is empty, or
            `y` has a different number of rows.
    """
    if time_probe is None:
        return None
    if not isinstance(time_probe, (tuple, list)):
        raise TypeError(
            "Argument `time_probe` must be None or a tuple `(x, y)` of a small batch of sequences and their "
            f"targets. Received: time_probe of type {type(time_probe).__name__}{_shape_note(time_probe)}"
        )
    if len(time_probe) != 2:
        raise ValueError(
            "Argument `time_probe` must be None or a tuple `(x, y)` of a small batch of sequences and their "
            f"targets. Received: time_probe with {len(time_probe)} entries"
        )
    x, y = time_probe
    x = np.asarray(x)
    if x.dtype == object:
        raise TypeError(
            f"Argument `time_probe` must hold {_SHAPES}. Received: time_probe[0] of type {type(x).__name__}"
        )
    dtype = keras.backend.standardize_dtype(x.dtype)
    kind = (
        "float"
        if keras.backend.is_float_dtype(dtype)
        else "int"
        if keras.backend.is_int_dtype(dtype)
        else None
    )
    if (kind, x.ndim) not in (("float", 3), ("int", 2)) or x.shape[0] == 0:
        hint = " (cast token ids to an integer dtype)" if (kind, x.ndim) == ("float", 2) else ""
        raise ValueError(
            f"Argument `time_probe` must hold {_SHAPES}{hint}. "
            f"Received: time_probe[0] with shape={x.shape} and dtype={dtype}"
        )
    y = keras.tree.map_structure(np.asarray, y)
    rows = {a.shape[0] for a in keras.tree.flatten(y) if a.ndim}
    if rows - {x.shape[0]}:
        shapes = [a.shape for a in keras.tree.flatten(y)]
        raise ValueError(
            "Argument `time_probe` must have as many targets as sequences. "
            f"Received: time_probe with x.shape={x.shape} and y shapes {shapes}"
        )
    return x, y


def _shape_note(value):
    shape = getattr(value, "shape", None)
    return "" if shape is None else f" with shape={tuple(shape)}"


def reach(norms, fraction=REACH_FRACTION):
    """Number of steps back from the end over which `norms >= fraction * max(norms)`.

    Counts the trailing run of time steps whose gradient norm is at least
    `fraction` times the largest one: how far back the gradient still arrives.
    NaN entries (steps masked in every sequence) are left out, so the count
    is over the unmasked steps.
    """
    norms = np.asarray(norms, dtype="float64")
    norms = norms[~np.isnan(norms)]
    peak = np.max(norms) if norms.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return 0
    above = norms >= fraction * peak
    if above.all():
        return int(norms.size)
    return int(norms.size - 1 - np.flatnonzero(~above)[-1])


def recurrent_layers(model):
    """Top-level recurrent layers of a functional (or Sequential) model."""
    if _model_input(model) is None:
        return []
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
    ]


def _model_inputs(model):
    """The model's symbolic inputs; none for a subclassed or unbuilt model."""
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):
        return []


def _model_input(model):
    """The model's single symbolic input, or None."""
    inputs = _model_inputs(model)
    return inputs[0] if len(inputs) == 1 else None


def _model_output(model):
    """The model's symbolic output, in the structure the model returns."""
    try:
        return model.output
    except AttributeError:  # Sequential has `outputs` only
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else outputs


def _consumers(model, tensor):
    """The top-level layers whose (first) call takes `tensor`."""
    found = []
    for layer in model.layers:
        try:
            inputs = keras.tree.flatten(layer.input)
        except (AttributeError, ValueError):
            continue
        if any(t is tensor for t in inputs):
            found.append(layer)
    return found


def _mask_of(tensor):
    """The (batch, timesteps) boolean mask Keras attached to `tensor`, or None."""
    mask = getattr(tensor, "_keras_mask", None)  # set by Embedding(mask_zero=True), Masking
    return mask if mask is not None and len(mask.shape) == 2 else None


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Target(NamedTuple):
    """One probed sequence: `head(x) -> (sequence, tail_extras, mask or None)`
    and `tail(sequence, tail_extras) -> y_pred`."""

    name: str
    head: Callable[[Any], tuple]
    tail: Callable[[Any, list], Any]


class TimeProbe:
    """Per-time-step gradient norms of the loss, on a fixed batch.

    For each probed sequence s (of shape `(batch, timesteps, ...)`) it
    computes `n_t = mean_i ||d loss_i / d s_{i,t}||`, where `loss_i` is
    example i's loss (the compiled loss, with `training=False`, times the
    batch size) and the norm runs over the remaining axes. The sequences are:

    - `"input"`: the model input for a float probe; for a token probe, the
      output of the layer that takes the tokens (an `Embedding`), since token
      ids have no gradient;
    - each top-level recurrent layer's input sequence, under the layer's name
      (functional and Sequential models).

    Masked steps are excluded: where a sequence carries a mask
    (`Embedding(mask_zero=True)`, `Masking`, the mask a recurrent layer
    receives), `n_t` is the mean over the examples whose step t is unmasked,
    and NaN where step t is masked in every example. `reach` skips NaN
    steps, so it counts unmasked steps only.

    The gradient is traced once per model and probe on TensorFlow
    (`tf.function`) and JAX (`jax.jit` of a pure function of the weights),
    and runs eagerly on PyTorch. Each `compute` reads the current weights and
    changes no variable: the model runs in a `keras.StatelessScope`.

    Args:
        model: a compiled Keras model.
        x: float sequences `(batch, timesteps, features)` or integer token
            ids `(batch, timesteps)`, as `validate_time_probe` returns them.
        y: their targets.
    """

    def __init__(self, model, x, y):
        self.model = model
        self.x = np.asarray(x)
        self.y = y
        self._tokens = keras.backend.is_int_dtype(keras.backend.standardize_dtype(self.x.dtype))
        self._targets = None
        self._function = None

    @property
    def trace_count(self):
        """How many times the current gradient function was traced (0 on
        PyTorch, which runs eagerly)."""
        return 0 if self._function is None else self._function.trace_count

    def check(self):
        """Checks the probe against the model; raises `ValueError` naming
        `time_probe` if the model cannot take it. Changes no variable (an
        unbuilt model is built).

        On TensorFlow and JAX this traces the gradient (which `compute` then
        reuses); on PyTorch it runs one probe example through the model and
        its loss. A model compiled again with another loss is checked (and
        traced) again."""
        compiled_for = (self.model.loss, len(self.model.variables))
        if self._function is not None and _same(compiled_for, self._compiled_for):
            return
        if getattr(self.model, "compiled", True) is False:
            raise ValueError(
                "Argument `time_probe` needs a compiled model: the probe differentiates its loss."
            )
        if not self.model.built:
            self._try_forward()
        self._check_shape()
        self._targets = self._build_targets()
        self._backend = backend.get("probe")
        function = self._backend.Function(self._gradients, self.model.variables)
        args = (
            ops.convert_to_tensor(self.x),
            keras.tree.map_structure(ops.convert_to_tensor, self.y),
        )
        try:
            traced = function.trace(*args)
        except Exception as e:
            raise ValueError(
                f"{self._describe(targets=True)}, on which the model or its loss fails: {e}"
            ) from e
        if not traced:
            self._try_forward()
        self._function, self._args, self._compiled_for = function, args, compiled_for

    def compute(self):
        """A list of `(name, norms, reach)`: the name (`"input"` or the
        recurrent layer's), a float64 NumPy array `(timesteps,)` and an int."""
        self.check()
        results = []
        for target, outputs in zip(self._targets, self._function(*self._args)):
            grad, *mask = (ops.convert_to_numpy(t) for t in outputs)
            norms = _per_step_norms(grad, mask[0] if mask else None)
            results.append((target.name, norms, reach(norms)))
        return results

    # ------------------------------------------------------------ checks
    def _describe(self, targets=False):
        kind = "token ids" if self._tokens else "sequences"
        text = f"Argument `time_probe` holds {kind} of shape {self.x.shape} (dtype {self.x.dtype})"
        if targets:
            text += f" and targets of shape {keras.tree.map_structure(lambda a: a.shape, self.y)}"
        return text

    def _check_shape(self):
        inputs = _model_inputs(self.model)
        if len(inputs) > 1:
            raise ValueError(
                f"{self._describe()}, but the model takes {len(inputs)} inputs; the probe needs one."
            )
        expected = _model_input(self.model)
        if expected is None:
            return
        shape = tuple(expected.shape)
        fits = len(shape) == self.x.ndim and all(
            e is None or e == d for e, d in zip(shape[1:], self.x.shape[1:])
        )
        if not fits:
            hint = (
                "Pass integer token ids of shape (batch, timesteps) to a model that takes tokens, and float "
                "sequences of shape (batch, timesteps, features) to one that takes sequences."
                if len(shape) != self.x.ndim
                else "Pass a probe with the model's number of time steps and features."
            )
            raise ValueError(
                f"{self._describe()}, but the model expects inputs of shape {shape}. {hint}"
            )

    def _try_forward(self):
        x = ops.convert_to_tensor(self.x[:1])
        y = keras.tree.map_structure(
            lambda a: ops.convert_to_tensor(a[:1] if a.ndim else a), self.y
        )
        with warnings.catch_warnings(), keras.StatelessScope():
            warnings.simplefilter("ignore")
            try:
                y_pred = self.model(x, training=False)
            except Exception as e:
                raise ValueError(f"{self._describe()}, which the model cannot take: {e}") from e
            try:
                self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            except Exception as e:
                raise ValueError(
                    f"{self._describe(targets=True)}, which the model's loss cannot take: {e}"
                ) from e

    # ----------------------------------------------------------- targets
    def _build_targets(self):
        inputs = _model_input(self.model)
        if inputs is None:
            if self._tokens:
                raise ValueError(
                    f"{self._describe()}, which needs a functional or Sequential model: the probe differentiates "
                    "with respect to the output of the layer that takes the tokens, which a subclassed model "
                    "does not expose. Pass float sequences instead."
                )
            return [_Target("input", lambda x: (x, [], None), self._call_model)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            targets = [self._token_target(inputs) if self._tokens else self._input_target(inputs)]
            for layer in recurrent_layers(self.model):
                target = self._recurrent_target(inputs, layer)
                if target is not None:
                    targets.append(target)
        return targets

    def _call_model(self, seq, extras):
        return self.model(seq, training=False)

    def _input_target(self, inputs):
        consumers = _consumers(self.model, inputs)
        mask = _mask_of(consumers[0].output) if len(consumers) == 1 else None
        masker = None if mask is None else keras.Model(inputs, mask)

        def head(x):
            return x, [], None if masker is None else masker(x, training=False)

        return _Target("input", head, self._call_model)

    def _token_target(self, inputs):
        consumers = _consumers(self.model, inputs)
        embedded = consumers[0].output if len(consumers) == 1 else None
        if not _is_sequence(embedded, self.x.shape[1]):
            names = (
                ", ".join(f"`{layer.name}` ({type(layer).__name__})" for layer in consumers)
                or "none"
            )
            raise ValueError(
                f"{self._describe()}, so the layer that takes the model input must be an Embedding-like layer "
                "returning float sequences of shape (batch, timesteps, features): the probe differentiates with "
                f"respect to its output. Layers taking the input: {names}."
            )
        mask = _mask_of(embedded)
        probed = [embedded] if mask is None else [embedded, mask]
        return self._split("input", inputs, probed, mask_index=None if mask is None else 1)

    def _recurrent_target(self, inputs, layer):
        try:
            # After a Masking layer (or with initial states) the layer's
            # inputs are [sequence, mask, ...]: the rest travel along.
            probed = _as_list(layer.input)
        except (AttributeError, ValueError):  # a layer used twice
            return None
        masks = [i for i, t in enumerate(probed) if i and t.dtype == "bool" and len(t.shape) == 2]
        try:
            return self._split(layer.name, inputs, probed, mask_index=masks[0] if masks else None)
        except ValueError:  # not in the model's graph
            return None

    def _split(self, name, inputs, probed, mask_index):
        head_model = keras.Model(inputs, probed)
        tail_model = keras.Model(probed, _model_output(self.model))

        def head(x):
            outputs = _as_list(head_model(x, training=False))
            return outputs[0], outputs[1:], None if mask_index is None else outputs[mask_index]

        def tail(seq, extras):
            return tail_model([seq, *extras], training=False)

        return _Target(name, head, tail)

    # ----------------------------------------------------- traced function
    def _gradients(self, x, y):
        """[(d loss / d sequence, mask?)] per target; traced by the backend."""
        with warnings.catch_warnings():
            # The probed sequence may carry its mask into a sub-model, which
            # warns that it drops it: the mask travels as an input instead.
            warnings.simplefilter("ignore")
            return [self._target_gradient(target, x, y) for target in self._targets]

    def _target_gradient(self, target, x, y):
        seq, extras, mask = target.head(x)

        def loss(s):
            # A scope of its own: updates and losses made while JAX
            # differentiates must not leak into the outer trace.
            mapping = [(v, v.value) for v in self.model.variables]
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                y_pred = target.tail(s, extras)
                value = self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            # Per-example losses: the batch mean times the batch size.
            return ops.cast(value, "float32") * self.x.shape[0]

        grad = self._backend.gradient(loss, seq)
        return (grad,) if mask is None else (grad, mask)


def _same(a, b):
    """Whether two `(loss, number of variables)` pairs are the same (the loss by identity)."""
    return a[0] is b[0] and a[1] == b[1]


def _is_sequence(tensor, timesteps):
    """Whether `tensor` is a float symbolic (batch, timesteps, features) tensor."""
    if not isinstance(tensor, keras.KerasTensor) or len(tensor.shape) != 3:
        return False
    return keras.backend.is_float_dtype(tensor.dtype) and tensor.shape[1] in (None, timesteps)


def _per_step_norms(grad, mask):
    """mean_i ||grad_{i,t}|| over the unmasked examples at each t (NaN where none is)."""
    grad = np.asarray(grad, dtype="float64")
    axes = tuple(range(2, grad.ndim))
    per_step = np.sqrt(np.sum(np.square(grad), axis=axes)) if axes else np.abs(grad)
    if mask is None:
        return per_step.mean(axis=0)
    weights = np.asarray(mask, dtype="float64")
    counts = weights.sum(axis=0)
    totals = (per_step * weights).sum(axis=0)
    return np.divide(totals, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def plot_png(norms, title):
    """`(png_bytes, width, height)`: `norms` against the time step, log-scale y axis.

    NaN entries (steps masked in every sequence) are left blank."""
    norms = np.asarray(norms, dtype="float64")
    r = reach(norms)
    measured = ~np.isnan(norms)

    def draw(ax):
        steps = np.arange(norms.size)
        positive = measured & (norms > 0)
        ax.plot(steps[positive], norms[positive], lw=1.2)
        _plots.mark_zeros(ax, steps[measured], norms[measured])
        ax.set_xlim(0, max(norms.size - 1, 1))
        ax.set_xlabel("time step t")
        ax.set_ylabel("mean |d loss / d x_t|")
        if measured.any() and r < measured.sum():
            first = np.flatnonzero(measured)[-r] if r else norms.size
            ax.axvline(first - 0.5, color="tab:red", ls="--", lw=1, label=f"reach = {r} steps")

    masked = "" if measured.all() else f" ({norms.size - measured.sum()} masked)"
    return _plots.figure_png(draw, f"{title}\nreach {r} of {measured.sum()} steps{masked}")
