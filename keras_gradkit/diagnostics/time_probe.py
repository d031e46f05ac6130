"""Gradient of the loss with respect to each time step of a sequence.

Used by `keras_gradkit.diagnose` and `GradientBoard(time_probe=(x, y))`.
Runs outside the train step, on a small fixed batch. The backend's part (`keras_gradkit.backend.<name>.probe`)
traces the gradient once per model and probe on TensorFlow and JAX, and runs
it eagerly on PyTorch; every call reads the model's current weights and
assigns no variable.
"""

import re
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gradkit import backend
from keras_gradkit.backend.common import norms
from keras_gradkit.diagnostics import activations, data, graph

REACH_FRACTION = 1e-3

# The earliest (latest) steps of a profile: its first (last) tenth, at least one.
EDGE_FRACTION = 0.1

# At most this many characters of a model's or backend's error go into ours.
ERROR_CHARACTERS = 240


def step_norms(grad):
    """`||grad_{i,t}||` over the axes after the first two: `(batch, timesteps)`."""
    grad = np.asarray(grad, dtype="float64")
    axes = tuple(range(2, grad.ndim))
    return np.sqrt(np.sum(np.square(grad), axis=axes)) if axes else np.abs(grad)


def aligned_profile(norms, mask=None):
    """The per-step profile of a batch of sequences, each aligned at its last unmasked step.

    A recurrent layer that returns its last output hands the loss's gradient
    to each sequence at its last unmasked step, whatever the padding: the
    gradient at a step depends on how many unmasked steps lie between it and
    that one. So each sequence keeps its unmasked steps, in order, and its
    last one goes to the last position: entry `T - 1 - d` is the mean, over
    the sequences with more than `d` unmasked steps, of the norm at the `d`-th
    unmasked step back from their last. Pre- and post-padded copies of the
    same sequences give the same profile. A step no sequence reaches (the
    first `T - longest` entries) is NaN.

    Args:
        norms: array `(batch, timesteps)`: the gradient norm of each
            sequence at each step (`step_norms`).
        mask: None (every step counts: the plain batch mean), or a bool
            array `(batch, timesteps)`, True at the unmasked steps.

    Returns:
        A float64 array `(timesteps,)`.
    """
    norms = np.asarray(norms, dtype="float64")
    if mask is None:
        return norms.mean(axis=0)
    mask = np.asarray(mask, dtype=bool)
    steps = norms.shape[1]
    # How many unmasked steps of its sequence follow each step.
    back = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1] - 1
    position = (steps - 1 - back)[mask]
    totals = np.bincount(position, weights=norms[mask], minlength=steps)
    counts = np.bincount(position, minlength=steps)
    return np.divide(totals, counts, out=np.full(steps, np.nan), where=counts > 0)


def reach(norms, fraction=REACH_FRACTION):
    """How many steps back from the last one the gradient arrives.

    Counted from the last step back, up to the first step whose norm is zero
    or below `fraction` times the largest finite norm at that step or after
    it (nearer the loss). A vanishing gradient reaches the last few steps; a
    healthy one and an exploding one (which grows going back, so never falls
    below what came after it) reach every step; a zero gradient none. NaN
    entries (steps no sequence reaches) are left out, so the count is over
    the measured steps.
    """
    norms = np.asarray(norms, dtype="float64")
    norms = norms[~np.isnan(norms)]
    finite = np.where(np.isfinite(norms), norms, 0.0)
    nearer = np.maximum.accumulate(finite[::-1])[::-1]
    arrives = (norms > 0) & (norms >= fraction * nearer)
    if arrives.all():
        return int(norms.size)
    return int(norms.size - 1 - np.flatnonzero(~arrives)[-1])


def summarize(norms, mask=None, fraction=REACH_FRACTION):
    """`{"steps", "early", "late", "peak", "reach"}` of one probed sequence.

    All five come from the same aligned profile: `steps` its measured steps
    (the longest sequence's unmasked steps), `early` (`late`) the mean of
    its first (last) tenth, at least one step, `peak` its largest entry and
    `reach` its `reach`. So `early / peak < fraction` means some early step
    is below `fraction` times a larger step after it: then `reach < steps`
    (when the first tenth holds at most `1 / fraction` steps).

    Args:
        norms: the aligned profile `(timesteps,)` of `TimeProbe.compute`
            (NaN entries left out), or the per-sequence norms
            `(batch, timesteps)` with their `mask`, aligned here.
        mask: None, or the bool mask `(batch, timesteps)` of 2-D `norms`.
        fraction: float, the fraction of `reach`.

    Returns:
        A dict, or None when the profile has fewer than two steps or a step
        that is not finite.
    """
    norms = np.asarray(norms, dtype="float64")
    if norms.ndim == 2:
        norms = aligned_profile(norms, mask)
    norms = norms[~np.isnan(norms)]
    if norms.size < 2 or not np.all(np.isfinite(norms)):
        return None
    k = max(1, int(norms.size * EDGE_FRACTION))
    return {
        "steps": int(norms.size),
        "early": float(norms[:k].mean()),
        "late": float(norms[-k:].mean()),
        "peak": float(norms.max()),
        "reach": reach(norms, fraction),
    }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = re.compile(
    r"^(in user code:|Graph execution error:|Detected at node|Traceback|\[\[|"
    r"(\w+: )?Exception encountered when calling)"
)


def brief_error(error, limit=ERROR_CHARACTERS):
    """The gist of an exception's text, at most `limit` characters.

    TensorFlow prefixes a traced function's error with its traceback, and
    Keras wraps a layer's error with the arguments it received (whole
    tensors, sometimes): the message proper follows the last frame."""
    text = _ANSI.sub("", str(error)).split("Arguments received by")[0]
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    if frames:
        frame, lines = lines[frames[-1]], lines[frames[-1] + 1 :]
        if lines and _indent(lines[0]) > _indent(frame):
            lines = lines[1:]  # the frame's source line
    lines = [line.strip() for line in lines]
    text = " ".join(line for line in lines if line and not _NOISE.match(line))
    text = re.sub(r"\s*\[Op:[^\]]*\]|\{\{function_node [^}]*\}\}\s*", "", text).strip()
    text = text or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _indent(line):
    return len(line) - len(line.lstrip())


def failure_message(described, y, error, what="on which the model or its loss fails", loss=True):
    """The message of `error`, which the model or (`loss`) its loss raised on a batch.

    Args:
        described: str, what the argument holds ("Argument `x` holds ...").
        y: the batch's targets, None when none was given: the message then
            asks for them when the loss failed.
        error: the exception.
        what: str, how the batch failed.
        loss: bool, whether the loss ran (so missing targets can be why).
    """
    if loss and y is None:
        return (
            f"{described} and no targets, but the model's loss needs them: pass `y` (or a "
            f"dataset that yields (x, y)). Received: y=None. The loss fails with: "
            f"{brief_error(error)}"
        )
    targets = "" if y is None else f" and targets of shape {describe_shapes(y)}"
    return f"{described}{targets}, {what}: {brief_error(error)}"


def check_forward(model, x, y, described):
    """Runs `model` and its loss, in training mode, on the first example of
    the batch (the whole batch for a model with a fixed batch size) and
    changes no variable (an unbuilt model is built).

    Args:
        model: a compiled Keras model.
        x, y: the batch (NumPy structures; `y` may be None).
        described: str, what the argument holds, to begin the messages.

    Raises:
        ValueError: the model or its loss cannot take the batch, with the
            gist of their error (`brief_error`).
    """
    rows = None if _fixed_batch_size(model) else 1

    def first(a):
        return ops.convert_to_tensor(a[:rows] if np.ndim(a) else a)

    kept = backend.get("probe").kept_random_state()
    # Mapped to themselves: in a scope that maps a variable to nothing, a
    # weight regularizer reads None (Keras's `_get_regularization_losses`).
    mapping = [(v, v.value) for v in model.variables]
    with warnings.catch_warnings(), kept, keras.StatelessScope(state_mapping=mapping):
        warnings.simplefilter("ignore")
        try:
            inputs = keras.tree.map_structure(first, x)
            y_pred = model(inputs, training=True)
        except Exception as e:
            raise ValueError(f"{described}, which the model cannot take: {brief_error(e)}") from e
        try:
            targets = None if y is None else keras.tree.map_structure(first, y)
            model.compute_loss(x=inputs, y=targets, y_pred=y_pred, training=True)
        except Exception as e:
            message = failure_message(described, y, e, "which the model's loss cannot take")
            hint = "" if y is None else data.refused_targets(model, y)
            if hint:
                message += (" " if message.endswith((".", "!", "?")) else ". ") + hint
            raise ValueError(message) from e


def _fixed_batch_size(model):
    return any(t.shape and t.shape[0] is not None for t in graph.model_inputs(model))


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

    Masked steps are excluded, and each sequence is aligned at its last
    unmasked step (`aligned_profile`): where a sequence carries a mask
    (`Embedding(mask_zero=True)`, `Masking`, the mask a recurrent layer
    receives), entry `T - 1 - d` is the mean of `||d loss_i / d s_{i,t}||`
    over the examples with more than `d` unmasked steps, at their `d`-th
    unmasked step back from their last, so pre- and post-padded batches
    give the same norms; the first `T - longest` entries, which no sequence
    reaches, are NaN. `reach` and `summarize` skip NaN entries, so they count
    the aligned steps only.

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
        activations: bool, with `variables`, also measure the activations
            (`keras_gradkit.diagnostics.activations`) in the forward pass
            of the variables' gradient, so they cost no pass of their own:
            after `compute_all`, `measured_activations` holds them. Where
            that pass cannot be traced with the activations' hooks, or
            the model has no trainable variable, `measured_activations`
            stays None and the caller measures them apart.
    """

    def __init__(
        self,
        model,
        x,
        y,
        sample_weight=None,
        time=True,
        variables=False,
        argument="time_probe",
        activations=False,
    ):
        self.model = model
        self._measures_activations = activations and variables
        self._activation_plan = None
        self.measured_activations = None
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
        try:
            for value in (self.x, self.y, self.sample_weight):
                _tensors(value)
        except Exception as e:  # strings on JAX or PyTorch
            message = self._failure(e, "which the backend cannot convert to tensors", loss=False)
            raise ValueError(message) from e
        # Traced for the arguments as `compute_all` passes them.
        args = tuple(map(self._backend.arguments, (self.x, self.y, self.sample_weight)))
        try:
            traced = function.trace(*args, self._backend.arguments(np.float32(1.0)))
        except Exception as e:
            if self._measures_activations:
                # Measured apart (eagerly if need be); the plain pass is
                # traced, or raises the error to show.
                self._measures_activations = False
                return self.check()
            raise ValueError(self._failure(e)) from e
        if not traced:
            self._try_forward()
        self._function, self._args, self._compiled_for = function, args, compiled_for

    def set_batch(self, x, y, sample_weight=None):
        """Probes another batch of the same shapes (the trace is reused)."""
        self.check()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self._args = tuple(map(self._backend.arguments, (x, y, sample_weight)))

    def compute(self):
        """A list of `(name, norms, reach)`: the name (`"input"` or the
        recurrent layer's), the aligned profile (a float64 NumPy array
        `(timesteps,)`, see `aligned_profile`) and its `reach`."""
        return self.compute_all()[1]

    def compute_all(self):
        """`(variable_norms, time_results)`: `{variable path: the L2 norm of
        its gradient}` (empty unless `variables=True`) and the list of
        `compute`."""
        return self.start()()

    def start(self):
        """Starts `compute_all` and returns a function of no argument that
        finishes it: on JAX the passes run while the caller does other work
        (the host reads their results only in that function)."""
        self.check()
        scale = _loss_scale(self.model)
        try:
            outputs = self._function(*self._args, self._backend.arguments(np.float32(scale)))
        except Exception as e:  # raised when the traced function runs (a token id out of range)
            raise ValueError(self._failure(e)) from e

        def finish():
            try:
                return self._results(outputs, scale)
            except ValueError:
                raise
            except Exception as e:  # raised while it ran (JAX dispatches asynchronously)
                raise ValueError(self._failure(e)) from e

        return finish

    def _results(self, outputs, scale):
        variable_norms = {}
        self.measured_activations = None
        if self.variables:
            if self._measures_activations:
                (values, counts), outputs = outputs[0], outputs[1:]
                self.measured_activations = activations.assemble(self._activation_plan, counts)
            else:
                values, outputs = outputs[0], outputs[1:]
            values = np.asarray(ops.convert_to_numpy(values), "float64") / scale
            variable_norms = {
                v.path: float(n) for v, n in zip(self.model.trainable_variables, values)
            }
        found = {}
        for target, target_outputs in zip(self._targets, outputs):
            grad, *mask = (ops.convert_to_numpy(t) for t in target_outputs)
            profile = aligned_profile(
                step_norms(np.asarray(grad, "float64") / scale), mask[0] if mask else None
            )
            found[target.name] = (target.name, profile, reach(profile))
        results = [
            (name, *found.get(name, found.get("input"))[1:])
            for name in self._names
            if name in found or "input" in found
        ]
        return variable_norms, results

    # ------------------------------------------------------------ checks
    def _describe(self):
        """What the argument holds, to begin the messages."""
        if not self.time:
            return f"Argument `{self._argument}` holds inputs of shape {describe_shapes(self.x)}"
        kind = "token ids" if self._tokens else "sequences"
        return (
            f"Argument `{self._argument}` holds {kind} of shape {self.x.shape} "
            f"(dtype {self.x.dtype})"
        )

    def _failure(self, error, what="on which the model or its loss fails", loss=True):
        """The message of `error`, raised by the model or (`loss`) its loss on the probe."""
        return failure_message(self._describe(), self.y, error, what, loss)

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
        check_forward(self.model, self.x, self.y, self._describe())

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
        measured = self._measures_activations and bool(trainable)

        def loss(*values):
            counts = []

            def y_pred_of():
                if not measured:
                    return self.model(x, training=True)
                y_pred, self._activation_plan, found = activations.measured_call(self.model, x)
                counts.append(found)
                return y_pred

            value = self._loss(
                x, y, sample_weight, scale, y_pred_of, list(zip(trainable, values)) + others
            )
            return (value, counts[0]) if measured else value

        values = [ops.convert_to_tensor(v.value) for v in trainable]
        # A model with every layer frozen has no gradient to take (and
        # torch.autograd.grad refuses an empty list).
        counts = None
        if measured:
            grads, counts = self._backend.gradients(loss, values, has_aux=True)
        else:
            grads = self._backend.gradients(loss, values) if values else []
        # Only the norms (and the activations' counts) leave the device.
        found = ops.stack(
            [norms.norm(g, overflow_safe=True) for g in grads] or [ops.zeros((), "float32")]
        )
        if self._measures_activations:
            if counts is None:  # no trainable variable: measured apart
                self._measures_activations = False
                return found
            return found, counts
        return found

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


def describe_shapes(structure, limit=120):
    """The shapes of a structure of arrays, at most `limit` characters."""
    text = str(keras.tree.map_structure(lambda a: tuple(np.shape(a)), structure))
    return text if len(text) <= limit else text[: limit - 3] + "..."
