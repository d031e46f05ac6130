"""Statistics of each optimizer step, recorded inside the train step (private).

One path serves a `ClippedOptimizer` and a plain optimizer watched by
`GradientBoard`: the measures of a step (gradient norms, the clipping
decision, update norms, optionally the gradients) leave the step, compiled or
not, through a backend `Sink` (variables that no optimizer or layer owns on
TensorFlow and PyTorch; on JAX, state carried by the train function of
`backend.jax.recording.make_train_function`, or `jax.debug.callback`
anywhere else), never through the
optimizer's own variables. So what Keras saves for an optimizer is the same
whether or not anything is recorded.

A plain optimizer is watched by a `Monitor`: the backend installs it on the
optimizer object itself as an instance-level wrapper of `apply` (TensorFlow,
PyTorch) or `stateless_apply` (JAX) for the duration of a `fit`, and removes
it afterwards; the optimizer keeps its class, its variables and its config.
"""

import math
import weakref
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gradkit import backend, clipping

# Layout of the `scalars` vector a step publishes.
SCALARS = (
    "step",
    "global_norm",
    "global_norm_clipped",
    "threshold",
    "clipped",
    "skipped",
    "loss_scale",
)

# Layout of the running totals a sink keeps: counts of updates (`steps`),
# of clipped and of skipped ones, and over the applied (not skipped) updates
# their count, how many had a non-finite global norm, how many had a finite
# update ratio, and the sums of their finite global norms before and after
# clipping and of the squares of their update ratios `|w_new - w_old| /
# |w_new|` over all variables together (for means and root mean squares over
# an epoch or between two checks).
TOTALS = (
    "steps",
    "clipped_steps",
    "skipped_steps",
    "applied_steps",
    "non_finite_applied_steps",
    "update_ratio_steps",
    "global_norm_sum",
    "global_norm_clipped_sum",
    "update_ratio_square_sum",
)


class StepStatistics(NamedTuple):
    """What the latest recorded step published, read on the host.

    `gradient_norms`, `update_norms` and `weight_norms` follow the recorder's
    variables; `update_norms`/`weight_norms` are None when not recorded and
    `gradients` (post-policy, float32) is None unless gradients are recorded.
    `steps`, `clipped_steps` and `skipped_steps` count the steps published
    since the recorder was created; `totals` holds all of `TOTALS`.
    """

    step: int
    global_norm: float
    global_norm_clipped: float
    threshold: float
    clipped: bool
    skipped: bool
    loss_scale: float
    gradient_norms: np.ndarray
    update_norms: object
    weight_norms: object
    gradients: object
    steps: int
    clipped_steps: int
    skipped_steps: int
    totals: object = None


def norm(x):
    """The L2 norm of a tensor or of deduplicated slices, in float32 (None for a None gradient)."""
    if x is None:
        return None
    x = backend.get("sparse").values_of(x)
    return ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32"))))


def as_gradients(grads):
    """Gradients as tensors; sparse ones (TensorFlow's `IndexedSlices`) stay
    sparse, with duplicate rows summed, so that their norms are the dense
    gradient's."""
    sparse = backend.get("sparse")
    grads = sparse.deduplicate(list(grads))
    return [g if g is None or sparse.is_sparse(g) else ops.convert_to_tensor(g) for g in grads]


def _map_values(g, fn):
    """`fn` applied to the entries of a tensor or of slices (None stays None)."""
    if g is None:
        return None
    sparse = backend.get("sparse")
    return sparse.with_values(g, fn(sparse.values_of(g)))


def dense(g):
    """A gradient as a dense tensor (slices scattered; None stays None)."""
    return backend.get("sparse").to_dense(g) if g is not None else None


def global_norm_of(norms):
    """sqrt of the sum of squares of scalar norms (None entries skipped)."""
    present = [ops.square(n) for n in norms if n is not None]
    if not present:
        return ops.zeros((), "float32")
    return ops.sqrt(ops.sum(ops.stack(present)))


def scatter(indices, values, size):
    """A float32 vector of `size` entries, `values[j]` at `indices[j]`, 0 elsewhere."""
    out = [ops.zeros((), "float32")] * size
    for i, v in zip(indices, values):
        if v is not None:
            out[i] = ops.cast(v, "float32")
    return ops.stack(out)


def update_norms(before, after):
    """`(|w_new - w_old|, |w_new|)` for each variable, as lists of float32 scalars."""
    return [norm(a - b) for a, b in zip(after, before)], [norm(a) for a in after]


class Recorder:
    """The latest step's statistics of one optimizer, published from inside
    its step and read on the host.

    Args:
        variables: the model variables the statistics describe, in order.
        update_norms: bool, whether steps publish update and weight norms.
        gradients: bool, whether steps publish their post-policy gradients.
    """

    def __init__(self, variables, update_norms=True, gradients=False):
        self.variables = list(variables)
        self.update_norms = update_norms
        k = len(self.variables)
        spec = {"scalars": [(len(SCALARS),)], "gradient_norms": [(k,)]}
        if update_norms:
            spec.update(update_norms=[(k,)], weight_norms=[(k,)])
        self._sink = backend.get("recording").Sink(spec)
        self.gradients = False
        if gradients:
            self.enable_gradients()

    @property
    def sink(self):
        """Where the steps publish (`backend/<name>/recording.Sink`)."""
        return self._sink

    def enable_gradients(self):
        """Starts publishing the gradients (a traced step must be traced again)."""
        if not self.gradients:
            self._sink.add("gradients", [tuple(v.shape) for v in self.variables])
            self.gradients = True

    def publish(self, when, scalars, gradient_norms, update=None, gradients=None):
        """Publishes a step if `when` (a boolean tensor): called inside the step.

        Args:
            when: boolean scalar; False for a step that is not an update
                (a gradient-accumulation micro-step).
            scalars: dict with a float value for every name in `SCALARS`.
            gradient_norms: float32 vector, one entry per recorder variable.
            update: `(update_norms, weight_norms)` vectors, when recorded.
            gradients: list of gradients (None entries as zeros), when recorded.
        """
        values = {
            "scalars": [ops.stack([ops.cast(scalars[name], "float32") for name in SCALARS])],
            "gradient_norms": [gradient_norms],
        }
        if self.update_norms:
            values["update_norms"], values["weight_norms"] = [update[0]], [update[1]]
        if self.gradients:
            values["gradients"] = [
                ops.zeros(v.shape, "float32") if g is None else ops.cast(dense(g), "float32")
                for g, v in zip(gradients, self.variables)
            ]
        skipped = ops.cast(scalars["skipped"], "bool")
        applied = ops.logical_not(skipped)
        total = ops.cast(scalars["global_norm"], "float32")
        after = ops.cast(scalars["global_norm_clipped"], "float32")
        finite = ops.logical_and(ops.isfinite(total), ops.isfinite(after))
        summed = ops.logical_and(applied, finite)
        zero = ops.zeros((), "float32")
        flags = [True, ops.cast(scalars["clipped"], "bool"), skipped, applied]
        flags.append(ops.logical_and(applied, ops.logical_not(finite)))
        ratio_steps, ratio = False, zero
        if self.update_norms:
            # |w_new - w_old| / |w_new| over all variables together.
            delta = ops.sqrt(ops.sum(ops.square(ops.cast(update[0], "float32"))))
            weight = ops.sqrt(ops.sum(ops.square(ops.cast(update[1], "float32"))))
            ratio = ops.divide(delta, ops.maximum(weight, 1e-30))
            ratio_steps = ops.logical_and(applied, ops.isfinite(ratio))
            ratio = ops.where(ratio_steps, ops.square(ratio), zero)
        flags.append(ratio_steps)
        counts = ops.concatenate(
            [
                ops.cast(ops.stack(flags), "float32"),
                ops.stack([ops.where(summed, total, zero), ops.where(summed, after, zero), ratio]),
            ]
        )
        self._sink.publish(ops.convert_to_tensor(when), values, counts)

    def latest(self):
        """The latest published step as `StepStatistics`, or None if none was."""
        values, totals = self._sink.read()
        if values is None:
            return None
        s = dict(zip(SCALARS, (float(x) for x in values["scalars"][0])))
        return StepStatistics(
            step=int(s["step"]),
            global_norm=s["global_norm"],
            global_norm_clipped=s["global_norm_clipped"],
            threshold=s["threshold"],
            clipped=bool(s["clipped"]),
            skipped=bool(s["skipped"]),
            loss_scale=s["loss_scale"],
            gradient_norms=values["gradient_norms"][0],
            update_norms=values["update_norms"][0] if self.update_norms else None,
            weight_norms=values["weight_norms"][0] if self.update_norms else None,
            # A step traced before gradients were switched on publishes none.
            gradients=values.get("gradients") if self.gradients else None,
            steps=int(totals[0]),
            clipped_steps=int(totals[1]),
            skipped_steps=int(totals[2]),
            totals=dict(zip(TOTALS, (float(t) for t in totals))),
        )


def flat_statistics(latest, counts, variables, update_norms, threshold=math.nan):
    """The documented flat dict of `gradient_statistics()`.

    Args:
        latest: the latest `StepStatistics`, or None (norms then read NaN).
        counts: `(steps, clipped_steps, skipped_steps)`.
        variables: the variables of the per-variable keys, in order.
        update_norms: bool, include `update_norm/*` and `weight_norm/*`.
        threshold: the threshold to report before the first step.
    """
    nan = math.nan
    stats = {"global_norm": nan, "global_norm_clipped": nan, "threshold": threshold, "clipped": 0.0}
    stats.update({k: float(v) for k, v in zip(("steps", "clipped_steps", "skipped_steps"), counts)})
    k = len(variables)
    norms = {"gradient_norm": np.full(k, nan)}
    if update_norms:
        norms.update(update_norm=np.full(k, nan), weight_norm=np.full(k, nan))
    if latest is not None:
        stats.update(
            global_norm=latest.global_norm,
            global_norm_clipped=latest.global_norm_clipped,
            threshold=latest.threshold,
            clipped=float(latest.clipped),
        )
        norms["gradient_norm"] = latest.gradient_norms
        if update_norms and latest.update_norms is not None:
            norms.update(update_norm=latest.update_norms, weight_norm=latest.weight_norms)
    for name, values in norms.items():
        for v, n in zip(variables, values):
            stats[f"{name}/{v.path}"] = float(n)
    return stats


class VariableSink:
    """A sink made of `keras.Variable`s that no optimizer or layer owns,
    assigned inside the step (TensorFlow, PyTorch). Created outside any
    trace, under the distribution strategy's scope when there is one."""

    def __init__(self, spec):
        self._variables = {}
        self._published = self._variable("published", (), 0.0)
        self._totals = self._variable("totals", (len(TOTALS),), 0.0)
        for name, shapes in spec.items():
            self.add(name, shapes)

    def _variable(self, name, shape, value=0.0):
        return keras.Variable(
            np.full(shape, value, "float32"),
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name=f"gradkit_recording_{name}",
        )

    def add(self, name, shapes):
        self._variables[name] = [
            self._variable(f"{name}_{i}", shape) for i, shape in enumerate(shapes)
        ]

    def publish(self, when, values, counts):
        for name, tensors in values.items():
            for variable, value in zip(self._variables[name], tensors):
                variable.assign(ops.where(when, value, variable))
        self._published.assign(ops.where(when, 1.0, self._published))
        self._totals.assign_add(ops.where(when, counts, ops.zeros_like(counts)))

    def _all(self):
        return [self._published, self._totals] + [
            v for name in sorted(self._variables) for v in self._variables[name]
        ]

    def _to_numpy(self, tensors):
        return [np.asarray(ops.convert_to_numpy(t)) for t in tensors]

    def read(self):
        """`(values, totals)` as NumPy; values is None before the first publish."""
        published, totals, *flat = self._to_numpy(self._read_tensors())
        if not published:
            return None, totals
        values, i = {}, 0
        for name in sorted(self._variables):
            n = len(self._variables[name])
            values[name], i = flat[i : i + n], i + n
        return values, totals

    def _read_tensors(self):
        return [ops.convert_to_tensor(v) for v in self._all()]


# --------------------------------------------------------------- updates
def base_optimizer(optimizer):
    """The optimizer that really updates (under any `LossScaleOptimizer`)."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def equivalent_policy(optimizer):
    """The policy matching Keras's own clipping arguments, or `NoClip`."""
    base = base_optimizer(optimizer)
    if base.clipnorm:
        return clipping.ClipByNorm(base.clipnorm)
    if base.global_clipnorm:
        return clipping.ClipByGlobalNorm(base.global_clipnorm)
    if base.clipvalue:
        return clipping.ClipByValue(base.clipvalue)
    return clipping.NoClip()


class UpdateView:
    """The gradient the update really uses, and the way back to what the
    optimizer expects.

    Undoes loss scaling (when the optimizer is a `LossScaleOptimizer`) and,
    under `gradient_accumulation_steps`, averages with the accumulated
    gradients: `full = (g + acc) / steps` on update steps. Keras has no
    public route to the accumulators nor to the micro-step count
    (`iterations` counts updates under accumulation), so this reads
    `_accumulated_gradients`, `_get_variable_index` and `_iterations`
    (`tests/test_optimizers.py` checks that they still mean this).
    """

    def __init__(self, optimizer, grads, tvs):
        base = base_optimizer(optimizer)
        # Read now: the step updates the scale, and on JAX the variable maps to
        # the step's value only inside its StatelessScope.
        is_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.loss_scale = (
            backend.get("recording").snapshot(optimizer.dynamic_scale) if is_scaled else None
        )
        full = grads
        if self.loss_scale is not None:
            full = [_map_values(g, lambda v: v / ops.cast(self.loss_scale, v.dtype)) for g in grads]
        self.steps = base.gradient_accumulation_steps
        self.is_update = None
        self.micro, self.acc = full, None
        if self.steps:
            self.is_update = ops.equal(
                ops.mod(ops.convert_to_tensor(base._iterations) + 1, self.steps), 0
            )
            self.acc = [
                None
                if g is None
                else ops.convert_to_tensor(base._accumulated_gradients[base._get_variable_index(v)])
                for g, v in zip(full, tvs)
            ]
            full = [
                None if g is None else (g + ops.cast(a, g.dtype)) / self.steps
                for g, a in zip(full, self.acc)
            ]
        self.full = full
        self.step = ops.cast(ops.convert_to_tensor(base.iterations), "float32")

    @property
    def counted(self):
        """True on update steps (always, without accumulation)."""
        return ops.convert_to_tensor(True) if self.is_update is None else self.is_update

    def loss_scale_value(self):
        return (
            ops.convert_to_tensor(math.nan, "float32")
            if self.loss_scale is None
            else self.loss_scale
        )

    def to_inner(self, grads):
        """Turns a gradient meant for the update into what the optimizer takes:
        re-scaled by the loss scale, and such that its accumulation
        `(g + acc) / steps` gives `grads` back on update steps."""
        if self.steps:
            grads = [
                None
                if g is None
                else ops.where(self.is_update, g * self.steps - ops.cast(a, g.dtype), m)
                for g, a, m in zip(grads, self.acc, self.micro)
            ]
        if self.loss_scale is not None:  # the inner LossScaleOptimizer unscales again
            grads = [
                _map_values(g, lambda v: v * ops.cast(self.loss_scale, v.dtype)) for g in grads
            ]
        return grads


# --------------------------------------------------------------- monitor
class _Pending(NamedTuple):
    counted: object
    indices: list
    scalars: dict
    gradient_norms: object
    gradients: list


class Monitor:
    """Records the steps of an optimizer that is not a `ClippedOptimizer`,
    while `active`, through a hook the backend installs on the optimizer.

    Reports Keras's own `clipnorm`, `global_clipnorm` or `clipvalue` as the
    equivalent policy (threshold, clipped flag, clipped gradient), and under
    a `LossScaleOptimizer` counts the steps it skips (non-finite gradients).
    `traces` counts the calls of the hook: traces of the train step on
    TensorFlow and JAX, steps on PyTorch.
    """

    def __init__(self, optimizer):
        self._optimizer = weakref.ref(optimizer)
        self.policy = equivalent_policy(optimizer)
        self.recorder = None
        self.active = False
        self.traces = 0

    def prepare(self, variables, update_norms, gradients):
        """Creates (or extends) the recorder. Returns True when what a traced
        step publishes changed, so the step must be traced again."""
        variables = list(variables)
        if self.recorder is None or [id(v) for v in self.recorder.variables] != [
            id(v) for v in variables
        ]:
            self.recorder = Recorder(variables, update_norms=True, gradients=gradients)
            return True
        if gradients and not self.recorder.gradients:
            self.recorder.enable_gradients()
            return True
        return False

    def before_update(self, grads, tvs, replica_sum=None):
        """The measures known before the update (inside the step)."""
        self.traces += 1
        optimizer = self._optimizer()
        grads = as_gradients(grads)
        view = UpdateView(optimizer, grads, tvs)
        full = view.full if replica_sum is None else as_gradients(replica_sum(view.full))
        norms = [norm(g) for g in full]
        total = global_norm_of(norms)
        clipped, _, info = self.policy.apply(full, tvs, [])
        index = {id(v): i for i, v in enumerate(self.recorder.variables)}
        indices = [index[id(v)] for v in tvs]
        skipped = (
            ops.logical_not(ops.isfinite(total))
            if view.loss_scale is not None
            else ops.convert_to_tensor(False)
        )
        scalars = {
            "step": view.step,
            "global_norm": total,
            "global_norm_clipped": clipping.global_norm(clipped),
            "threshold": info["threshold"],
            "clipped": ops.logical_and(info["clipped"], ops.logical_not(skipped)),
            "skipped": skipped,
            "loss_scale": view.loss_scale_value(),
        }
        size = len(self.recorder.variables)
        return _Pending(view.counted, indices, scalars, scatter(indices, norms, size), clipped)

    def after_update(self, pending, before, after):
        """Publishes the step, given the variables' values before and after it."""
        size = len(self.recorder.variables)
        deltas, weights = update_norms(before, after)
        update = (scatter(pending.indices, deltas, size), scatter(pending.indices, weights, size))
        gradients = [None] * size
        for i, g in zip(pending.indices, pending.gradients):
            gradients[i] = g
        self.recorder.publish(
            pending.counted, pending.scalars, pending.gradient_norms, update, gradients
        )


def wrap_method(optimizer, name, make_wrapper):
    """Sets `optimizer.<name>` (instance level) to `make_wrapper(original)`.

    Returns a function that puts the object back as it was (a plain object
    attribute is not saved by Keras, and goes away again)."""
    had_own = name in optimizer.__dict__
    original = getattr(optimizer, name)
    setattr(optimizer, name, make_wrapper(original))

    def remove():
        if had_own:
            setattr(optimizer, name, original)
        else:
            optimizer.__dict__.pop(name, None)

    return remove


def hook_apply(optimizer, monitor, snapshot, replica_sum=lambda: None):
    """Wraps `optimizer.apply` so that `monitor` records each step while
    active (the trainers of TensorFlow and PyTorch call `apply`).

    Args:
        snapshot: the backend's read of a variable's current value.
        replica_sum: returns the cross-replica sum to use now, or None.
    Returns:
        A function that removes the wrapper.
    """

    def make_wrapper(original):
        def apply(grads, trainable_variables=None):
            if not monitor.active:
                return original(grads, trainable_variables)
            grads = list(grads)
            tvs = (
                optimizer._trainable_variables
                if trainable_variables is None
                else list(trainable_variables)
            )
            pending = monitor.before_update(grads, tvs, replica_sum())
            before = [snapshot(v) for v in tvs]  # reads, ordered before the update
            result = original(grads, trainable_variables)
            monitor.after_update(pending, before, [snapshot(v) for v in tvs])
            return result

        return apply

    return wrap_method(optimizer, "apply", make_wrapper)


_MONITORS = weakref.WeakKeyDictionary()


def monitor_for(optimizer):
    """The `Monitor` of an optimizer (one per optimizer object, kept while it lives)."""
    monitor = _MONITORS.get(optimizer)
    if monitor is None:
        monitor = _MONITORS[optimizer] = Monitor(optimizer)
    return monitor
