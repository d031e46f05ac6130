"""Gradient of the loss with respect to each time step of a sequence.

Used by `keras_gradkit.diagnose` and `GradientBoard(time_probe=(x, y))`.
Runs outside the train step, on a small fixed batch. The backend's part (`keras_gradkit.backend.<name>.probe`)
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
from keras_gradkit.backend.common import norms
from keras_gradkit.diagnostics import graph

REACH_FRACTION = 1e-3


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


class _Target(NamedTuple):
    """One probed sequence: `head(x) -> (sequence, tail_extras, mask or None)`
    and `tail(sequence, tail_extras) -> y_pred`."""

    name: str
    head: Callable[[Any], tuple]
    tail: Callable[[Any, list], Any]


class TimeProbe:
    """Per-time-step gradient norms of the loss, on a fixed batch; with
    `variables=True`, the gradient of each trainable variable too.

    For each probed sequence s (of shape `(batch, timesteps, ...)`) it
    computes `n_t = mean_i ||d loss_i / d s_{i,t}||`, where `loss_i` is
    example i's loss (the compiled loss, in training mode, times the batch
    size) and the norm runs over the remaining axes. The sequences are:

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

    The model runs in training mode, as in a train step (dropout on, batch
    statistics), so `GradientBoard` and `keras_gradkit.diagnose` measure the
    same gradient. Under a `LossScaleOptimizer` the loss is scaled by its
    current scale and the gradients unscaled, as the train step does, so
    float16 gradients do not underflow.

    The gradient is traced once per model and probe on TensorFlow
    (`tf.function`) and JAX (`jax.jit` of a pure function of the weights),
    and runs eagerly on PyTorch. Each `compute` reads the current weights and
    changes no variable: the model runs in a `keras.StatelessScope`, so
    moving statistics, metrics and seed generators keep their values.

    Args:
        model: a compiled Keras model.
        x: float sequences `(batch, timesteps, features)` or integer token
            ids `(batch, timesteps)`, as `validate_time_probe` returns them
            (with `time=False`, any input the model takes).
        y: their targets.
        sample_weight: None, or the per-example weights of the loss.
        time: bool, probe the sequences (False: the variables only).
        variables: bool, also compute the gradient of each trainable
            variable (one more backward pass, through the whole model).
        argument: str, the argument the errors name.
    """

    def __init__(
        self, model, x, y, sample_weight=None, time=True, variables=False, argument="time_probe"
    ):
        self.model = model
        self._argument = argument
        self.x = np.asarray(x) if time else keras.tree.map_structure(np.asarray, x)
        self.y = y
        self.sample_weight = sample_weight
        self.time = time
        self.variables = variables
        self._tokens = time and keras.backend.is_int_dtype(
            keras.backend.standardize_dtype(self.x.dtype)
        )
        self._targets = None
        self._function = None

    @property
    def trace_count(self):
        """How many times the current gradient function was traced (0 on
        PyTorch, which runs eagerly)."""
        return 0 if self._function is None else self._function.trace_count

    @property
    def batch_size(self):
        return int(keras.tree.flatten(self.x)[0].shape[0])

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
                f"Argument `{self._argument}` needs a compiled model: the probe differentiates "
                "its loss. Call `model.compile(optimizer=..., loss=...)` first."
            )
        if not self.model.built:
            self._try_forward()
        if self.time:
            self._check_shape()
        # The probed sequences' names, in order; a name without a target of
        # its own reads the model input's.
        self._names = ["input"] if self.time else []
        self._targets = self._build_targets() if self.time else []
        self._backend = backend.get("probe")
        function = self._backend.Function(self._gradients, self.model.variables)
        args = (_tensors(self.x), _tensors(self.y), _tensors(self.sample_weight))
        try:
            traced = function.trace(*args, ops.convert_to_tensor(1.0))
        except Exception as e:
            raise ValueError(
                f"{self._describe(targets=True)}, on which the model or its loss fails: {e}"
            ) from e
        if not traced:
            self._try_forward()
        self._function, self._args, self._compiled_for = function, args, compiled_for

    def set_batch(self, x, y, sample_weight=None):
        """Probes another batch of the same shapes (the trace is reused)."""
        self.check()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self._args = (_tensors(x), _tensors(y), _tensors(sample_weight))

    def compute(self):
        """A list of `(name, norms, reach)`: the name (`"input"` or the
        recurrent layer's), a float64 NumPy array `(timesteps,)` and an int."""
        return self.compute_all()[1]

    def compute_all(self):
        """`(variable_norms, time_results)`: `{variable path: the L2 norm of
        its gradient}` (empty unless `variables=True`) and the list of
        `compute`."""
        self.check()
        scale = _loss_scale(self.model)
        outputs = self._function(*self._args, ops.convert_to_tensor(scale))
        variable_norms = {}
        if self.variables:
            values, outputs = outputs[0], outputs[1:]
            values = np.asarray(ops.convert_to_numpy(values), "float64") / scale
            variable_norms = {
                v.path: float(n) for v, n in zip(self.model.trainable_variables, values)
            }
        found = {}
        for target, target_outputs in zip(self._targets, outputs):
            grad, *mask = (ops.convert_to_numpy(t) for t in target_outputs)
            norms = _per_step_norms(np.asarray(grad, "float64") / scale, mask[0] if mask else None)
            found[target.name] = (target.name, norms, reach(norms))
        results = [
            (name, *found.get(name, found.get("input"))[1:])
            for name in self._names
            if name in found or "input" in found
        ]
        return variable_norms, results

    # ------------------------------------------------------------ checks
    def _describe(self, targets=False):
        if not self.time:
            shapes = keras.tree.map_structure(lambda a: a.shape, self.x)
            text = f"Argument `{self._argument}` holds inputs of shape {shapes}"
            if targets:
                text += (
                    f" and targets of shape {keras.tree.map_structure(lambda a: a.shape, self.y)}"
                )
            return text
        kind = "token ids" if self._tokens else "sequences"
        text = (
            f"Argument `{self._argument}` holds {kind} of shape {self.x.shape} "
            f"(dtype {self.x.dtype})"
        )
        if targets:
            text += f" and targets of shape {keras.tree.map_structure(lambda a: a.shape, self.y)}"
        return text

    def _check_shape(self):
        inputs = graph.model_inputs(self.model)
        if len(inputs) > 1:
            raise ValueError(
                f"{self._describe()}, but the model takes {len(inputs)} inputs; the probe needs one."
            )
        expected = graph.model_input(self.model)
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
        first = lambda a: ops.convert_to_tensor(a[:1] if a.ndim else a)  # noqa: E731
        x = keras.tree.map_structure(first, self.x)
        y = keras.tree.map_structure(first, self.y)
        kept = backend.get("probe").kept_random_state()
        with warnings.catch_warnings(), kept, keras.StatelessScope():
            warnings.simplefilter("ignore")
            try:
                y_pred = self.model(x, training=True)
            except Exception as e:
                raise ValueError(f"{self._describe()}, which the model cannot take: {e}") from e
            try:
                self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            except Exception as e:
                raise ValueError(
                    f"{self._describe(targets=True)}, which the model's loss cannot take: {e}"
                ) from e

    # ----------------------------------------------------------- targets
    def _build_targets(self):
        inputs = graph.model_input(self.model)
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
            for layer in graph.recurrent_layers(self.model):
                if not self._tokens and graph.takes_only(layer, inputs):
                    # Its input sequence is the model input: the same
                    # gradient, measured once.
                    self._names.append(layer.name)
                    continue
                target = self._recurrent_target(inputs, layer)
                if target is not None:
                    targets.append(target)
                    self._names.append(layer.name)
        return targets

    def _call_model(self, seq, extras):
        return self.model(seq, training=True)

    def _input_target(self, inputs):
        consumers = graph.consumers(self.model, inputs)
        mask = graph.mask_of(consumers[0].output) if len(consumers) == 1 else None
        masker = None if mask is None else keras.Model(inputs, mask)

        def head(x):
            return x, [], None if masker is None else masker(x, training=True)

        return _Target("input", head, self._call_model)

    def _token_target(self, inputs):
        consumers = graph.consumers(self.model, inputs)
        embedded = consumers[0].output if len(consumers) == 1 else None
        if not graph.is_sequence(embedded, self.x.shape[1]):
            names = (
                ", ".join(f"`{layer.name}` ({type(layer).__name__})" for layer in consumers)
                or "none"
            )
            raise ValueError(
                f"{self._describe()}, so the layer that takes the model input must be an Embedding-like layer "
                "returning float sequences of shape (batch, timesteps, features): the probe differentiates with "
                f"respect to its output. Layers taking the input: {names}."
            )
        mask = graph.mask_of(embedded)
        probed = [embedded] if mask is None else [embedded, mask]
        return self._split("input", inputs, probed, mask_index=None if mask is None else 1)

    def _recurrent_target(self, inputs, layer):
        try:
            # After a Masking layer (or with initial states) the layer's
            # inputs are [sequence, mask, ...]: the rest travel along.
            probed = graph.as_list(layer.input)
        except (AttributeError, ValueError):  # a layer used twice
            return None
        masks = [i for i, t in enumerate(probed) if i and t.dtype == "bool" and len(t.shape) == 2]
        try:
            return self._split(layer.name, inputs, probed, mask_index=masks[0] if masks else None)
        except ValueError:  # not in the model's graph
            return None

    def _split(self, name, inputs, probed, mask_index):
        head_model = keras.Model(inputs, probed)
        tail_model = keras.Model(probed, graph.model_output(self.model))

        def head(x):
            outputs = graph.as_list(head_model(x, training=True))
            return outputs[0], outputs[1:], None if mask_index is None else outputs[mask_index]

        def tail(seq, extras):
            return tail_model([seq, *extras], training=True)

        return _Target(name, head, tail)

    # ----------------------------------------------------- traced function
    def _gradients(self, x, y, sample_weight, scale):
        """[variable gradients?] + [(d loss / d sequence, mask?)] per target;
        traced by the backend."""
        with warnings.catch_warnings():
            # The probed sequence may carry its mask into a sub-model, which
            # warns that it drops it: the mask travels as an input instead.
            warnings.simplefilter("ignore")
            found = [self._variable_gradients(x, y, sample_weight, scale)] if self.variables else []
            return found + [
                self._target_gradient(target, x, y, sample_weight, scale)
                for target in self._targets
            ]

    def _loss(self, x, y, sample_weight, scale, y_pred_of, mapping, factor=1):
        # A scope of its own: updates and losses made while JAX
        # differentiates must not leak into the outer trace.
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            y_pred = y_pred_of()
            value = self.model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        return ops.cast(value, "float32") * (factor * ops.cast(scale, "float32"))

    def _variable_gradients(self, x, y, sample_weight, scale):
        trainable = self.model.trainable_variables
        ids = {id(v) for v in trainable}
        others = [(v, v.value) for v in self.model.variables if id(v) not in ids]

        def loss(*values):
            return self._loss(
                x,
                y,
                sample_weight,
                scale,
                lambda: self.model(x, training=True),
                list(zip(trainable, values)) + others,
            )

        grads = self._backend.gradients(loss, [ops.convert_to_tensor(v.value) for v in trainable])
        # Only the norms leave the device.
        return ops.stack(
            [norms.norm(g, overflow_safe=True) for g in grads] or [ops.zeros((), "float32")]
        )

    def _target_gradient(self, target, x, y, sample_weight, scale):
        seq, extras, mask = target.head(x)
        mapping = [(v, v.value) for v in self.model.variables]

        def loss(s):
            # Per-example losses: the batch mean times the batch size.
            return self._loss(
                x,
                y,
                sample_weight,
                scale,
                lambda: target.tail(s, extras),
                mapping,
                factor=self.batch_size,
            )

        grad = self._backend.gradient(loss, seq)
        return (grad,) if mask is None else (grad, mask)


def _tensors(value):
    """A structure of arrays as tensors (None stays None)."""
    return None if value is None else keras.tree.map_structure(ops.convert_to_tensor, value)


def _loss_scale(model):
    """The current scale of the model's `LossScaleOptimizer`, or 1."""
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return float(ops.convert_to_numpy(optimizer.dynamic_scale))
    return 1.0


def _same(a, b):
    """Whether two `(loss, number of variables)` pairs are the same (the loss by identity)."""
    return a[0] is b[0] and a[1] == b[1]


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
