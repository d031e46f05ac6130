"""Measuring one optimizer step: the one function that a `ClippedOptimizer`
and the monitor of any other optimizer both use (`measure_step`, then
`publish_step` once the update has run)."""

import math
from typing import Any, NamedTuple

import keras

from keras_gradkit import backend, clipping
from keras_gradkit.backend import keras_private
from keras_gradkit.backend.common import gradients as sparse_gradients
from keras_gradkit.backend.common import norms
from keras_gradkit.recording.contract import StepScalars

# The step's ops: Keras's, or (PyTorch, eager) the backend's own.
step_ops = backend.get("step_ops")


def as_gradients(grads):
    """Gradients as tensors; sparse ones (TensorFlow's `IndexedSlices`) stay
    sparse, with duplicate rows summed, so that their norms are the dense
    gradient's."""
    sparse = backend.get("sparse")
    grads = sparse.deduplicate(list(grads))
    return [g if g is None or sparse.is_sparse(g) else step_ops.convert_to_tensor(g) for g in grads]


def scatter(indices, values, size):
    """A float32 vector of `size` entries, `values[j]` at `indices[j]`, 0 elsewhere."""
    if list(indices) == list(range(size)) and all(v is not None for v in values):
        return step_ops.stack([step_ops.cast(v, "float32") for v in values])  # each entry, in order
    out = [step_ops.zeros((), "float32")] * size
    for i, v in zip(indices, values):
        if v is not None:
            out[i] = step_ops.cast(v, "float32")
    return step_ops.stack(out)


def optimizer_chain(optimizer):
    """The optimizer and those it wraps (`inner_optimizer`), outermost first."""
    while optimizer is not None:
        yield optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)


def base_optimizer(optimizer):
    """The optimizer that really updates (under any `LossScaleOptimizer`)."""
    return next(
        o
        for o in optimizer_chain(optimizer)
        if not isinstance(o, keras.optimizers.LossScaleOptimizer)
    )


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
    (`iterations` counts updates under accumulation): see `keras_private`.
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
            full = [self._rescaled(g, divide=True) for g in grads]
        self.steps = base.gradient_accumulation_steps
        self.is_update = None
        self.micro, self.acc = full, None
        if self.steps:
            micro_step = keras_private.micro_step_count(base)
            self.is_update = step_ops.equal(step_ops.mod(micro_step + 1, self.steps), 0)
            self.acc = [
                None if g is None else keras_private.accumulated_gradient(base, v)
                for g, v in zip(full, tvs)
            ]
            full = [
                None if g is None else (g + step_ops.cast(a, g.dtype)) / self.steps
                for g, a in zip(full, self.acc)
            ]
        self.full = full
        self.step = step_ops.cast(step_ops.convert_to_tensor(base.iterations), "float32")

    def _rescaled(self, g, divide):
        scale = self.loss_scale
        if divide:
            return sparse_gradients.map_values(g, lambda v: v / step_ops.cast(scale, v.dtype))
        return sparse_gradients.map_values(g, lambda v: v * step_ops.cast(scale, v.dtype))

    @property
    def counted(self):
        """True on update steps: the Python `True` without accumulation (known
        before the step runs), else a boolean tensor."""
        return True if self.is_update is None else self.is_update

    def loss_scale_value(self):
        if self.loss_scale is None:
            return step_ops.convert_to_tensor(math.nan, "float32")
        return self.loss_scale

    def to_inner(self, grads):
        """Turns a gradient meant for the update into what the optimizer takes:
        re-scaled by the loss scale, and such that its accumulation
        `(g + acc) / steps` gives `grads` back on update steps."""
        if self.steps:
            grads = [
                None
                if g is None
                else step_ops.where(self.is_update, g * self.steps - step_ops.cast(a, g.dtype), m)
                for g, a, m in zip(grads, self.acc, self.micro)
            ]
        if self.loss_scale is not None:  # the inner LossScaleOptimizer unscales again
            grads = [self._rescaled(g, divide=False) for g in grads]
        return grads


class MeasuredStep(NamedTuple):
    """What `measure_step` found, before the update runs."""

    view: UpdateView  # the gradient the update uses, and the way back
    gradients: list  # the policy's gradients, one per variable of the step
    norms: list  # the norm of each gradient before the policy
    global_norm: Any  # their global norm
    global_norm_clipped: Any  # the global norm after the policy
    state: list  # the policy's new state
    info: dict  # the policy's `threshold`, `clipped` and `skip`


def measure_step(optimizer, grads, variables, policy, state=(), replica_sum=None):
    """Measures a step and applies `policy` to the gradient the update uses
    (pure: inside the train step, before the update).

    Args:
        optimizer: the optimizer whose update the gradient feeds (it may be a
            `LossScaleOptimizer`, or have `gradient_accumulation_steps`).
        grads: the step's gradients, one per entry of `variables`.
        variables: the variables the step updates.
        policy: the `ClippingPolicy` to apply (or to report, as the
            equivalent of Keras's own clipping).
        state: the policy's state tensors.
        replica_sum: sums a list of gradients over the replicas, or None.

    Returns:
        A `MeasuredStep`. Each gradient's norm is computed once: the policy
        reuses it (`norms.reusing`).
    """
    view = UpdateView(optimizer, as_gradients(grads), variables)
    # The all-reduced slices hold each replica's rows: summed again.
    full = view.full if replica_sum is None else as_gradients(replica_sum(view.full))
    squares = norms.squared_norms(full)
    global_norm = norms.global_norm_of_squares(squares)
    with norms.reusing(full, squares):
        clipped, new_state, info = policy.apply(full, variables, list(state))
        if len(clipped) == len(full) and all(c is g for c, g in zip(clipped, full)):
            global_norm_clipped = global_norm  # the policy returned the gradients as they were
        else:  # a gradient returned as it was keeps its square
            global_norm_clipped = norms.global_norm(clipped)
    return MeasuredStep(
        view=view,
        gradients=clipped,
        norms=norms.roots(squares),
        global_norm=global_norm,
        global_norm_clipped=global_norm_clipped,
        state=new_state,
        info=info,
    )


def scalars_of(measured, clipped, skipped):
    """The step's `StepScalars`."""
    return StepScalars(
        step=measured.view.step,
        global_norm=measured.global_norm,
        global_norm_clipped=measured.global_norm_clipped,
        threshold=measured.info["threshold"],
        clipped=clipped,
        skipped=skipped,
        loss_scale=measured.view.loss_scale_value(),
    )


def publish_step(recorder, indices, measured, scalars, counted, before=None, after=None):
    """Publishes a measured step to `recorder` (inside the step, after the update).

    Args:
        recorder: the `Recorder`.
        indices: the position of each of the step's variables among the recorder's.
        measured: the step's `MeasuredStep`.
        scalars: its `StepScalars`.
        counted: boolean tensor, False for a gradient-accumulation micro-step,
            or the Python `True` when every step counts.
        before, after: the step's variables' values before and after the
            update, when the recorder keeps update norms.
    """
    size = len(recorder.variables)
    update = None
    if recorder.update_norms:
        deltas = backend.get("norms").differences(after, before)
        both = norms.norms([*deltas, *after])  # one call for the two lists
        deltas, weights = both[: len(deltas)], both[len(deltas) :]
        update = (scatter(indices, deltas, size), scatter(indices, weights, size))
    gradients = [None] * size
    for i, g in zip(indices, measured.gradients):
        gradients[i] = g
    gradient_norms = scatter(indices, measured.norms, size)
    recorder.publish(counted, scalars, gradient_norms, update, gradients)
