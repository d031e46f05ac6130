"""Recording on JAX.

Inside a train function made by `make_train_function` (GradientBoard's), a
step's statistics stay on the device: the sinks' states are inputs and
outputs of the jitted step, like the model's own state, and are fetched only
when they are read. Anywhere else (a user's own jitted loop, Keras's train
function) they leave the step through `jax.debug.callback`.

The monitor's hook wraps the optimizer's `stateless_apply`, which Keras's JAX
trainer calls (private).
"""

import itertools

import jax
import keras
import numpy as np
from keras import ops

from keras_gradkit.backend import keras_private
from keras_gradkit.backend.common import hooks
from keras_gradkit.backend.common.variable_sink import checked

# The sinks' states of the step being traced (or run eagerly) by a train
# function of `make_train_function`: {sink: state}, or None outside one.
_collecting = None


class Sink:
    """The latest values a step published, and running totals of its counts.

    A step publishes its values whether or not it counts (`when`: False for a
    gradient-accumulation micro-step); only the counted ones are kept.
    """

    def __init__(self, spec, num_totals):
        self._shapes = {}
        self._num_totals = num_totals
        self._host = None  # the values callbacks sent, or None
        self._host_totals = np.zeros(num_totals, "float64")
        self._callbacks = False  # whether any step used a callback
        self._device = None  # the state a collecting step returned, or None
        self._carried_totals = None  # device totals kept across a change of layout
        self._newest = None  # "host" or "device": where the latest step went
        for name, shapes in spec.items():
            self.add(name, shapes)

    def add(self, name, shapes):
        self._shapes[name] = [tuple(s) for s in shapes]
        if self._device is not None:  # the layout changed: the next collecting step starts afresh
            self._carried_totals, self._device = self._device["totals"], None

    def _initial_state(self):
        """The state a collecting step starts from, before any step published."""
        totals = self._carried_totals
        return {
            "published": np.zeros((), "bool"),
            "totals": np.zeros(self._num_totals, "float32") if totals is None else totals,
            "values": {
                name: [np.zeros(s, "float32") for s in shapes]
                for name, shapes in self._shapes.items()
            },
        }

    # The state a train function of `make_train_function` carries (this
    # module's own business: not part of the `Sink` contract).
    def _carried_state(self):
        return self._initial_state() if self._device is None else self._device

    def _carry(self, state):
        self._device = state
        self._newest = "device"

    def publish(self, when, values, counts):
        for name, tensors in values.items():
            for value, shape in zip(tensors, self._shapes[name]):
                checked(name, value, shape)
        when = ops.convert_to_tensor(when)
        if (
            _collecting is not None
            and self in _collecting
            and _traced_with(_collecting.trace, (when, values, counts))
        ):
            old = _collecting[self]
            _collecting[self] = {
                "published": ops.logical_or(old["published"], when),
                "totals": old["totals"] + ops.where(when, counts, ops.zeros_like(counts)),
                "values": {
                    name: [
                        ops.where(when, ops.cast(v, "float32"), o)
                        for v, o in zip(tensors, old["values"][name])
                    ]
                    for name, tensors in values.items()
                },
            }
            return
        self._callbacks = True
        jax.debug.callback(self._store, when, values, counts)

    def _store(self, when, values, counts):
        if not bool(np.asarray(when)):
            return
        self._host = {
            name: [np.array(v, copy=True) for v in tensors] for name, tensors in values.items()
        }
        self._host_totals = self._host_totals + np.asarray(counts, "float64")
        self._newest = "host"

    def read(self):
        """`(values, totals)` as NumPy; values is None before the first publish."""
        if self._callbacks:
            jax.effects_barrier()  # callbacks of steps already dispatched have run
        totals = self._host_totals.copy()
        device = None
        if self._device is not None:
            device = jax.device_get(self._device)
            totals = totals + np.asarray(device["totals"], "float64")
        elif self._carried_totals is not None:
            totals = totals + np.asarray(jax.device_get(self._carried_totals), "float64")
        if self._newest == "device" and device is not None and bool(device["published"]):
            values = {
                name: [np.asarray(v) for v in tensors] for name, tensors in device["values"].items()
            }
            return values, totals
        return self._host, totals


class _Collection(dict):
    """{sink: state} for the step being traced, and the trace it belongs to."""

    def __init__(self, sinks, states):
        super().__init__(zip(sinks, states))
        leaves = jax.tree_util.tree_leaves(states)
        self.trace = getattr(leaves[0], "_trace", None) if leaves else None


def _traced_with(trace, values):
    """Whether `values` belong to `trace` (None: run eagerly), so that they
    may join the step's outputs. A value computed inside a `lax.cond` branch
    (an optimizer that a `LossScaleOptimizer` wraps, a gradient-accumulation
    update) belongs to the branch's trace and leaves by a callback instead."""
    return all(getattr(v, "_trace", trace) is trace for v in jax.tree_util.tree_leaves(values))


def snapshot(variable):
    """The variable's current value (in a StatelessScope, the mapped one)."""
    return ops.copy(ops.convert_to_tensor(variable))


def snapshots(variables):
    """`[snapshot(v) for v in variables]`."""
    return [snapshot(v) for v in variables]


# The trace elides the copies: nothing to save.
values_now = snapshots


def install(optimizer, monitor):
    """Wraps `optimizer.stateless_apply` (instance level), which Keras's JAX
    trainer calls, so that `monitor` records each step while active.
    Returns a function that removes it."""

    def make_wrapper(original):
        def stateless_apply(optimizer_variables, grads, trainable_variables):
            if not monitor.active:
                return original(optimizer_variables, grads, trainable_variables)
            tvs = keras_private.trainable_variables_of(optimizer)
            mapping = list(zip(tvs, trainable_variables)) + list(
                zip(optimizer.variables, optimizer_variables)
            )
            with keras.StatelessScope(state_mapping=mapping):
                pending = monitor.before_update(list(grads), tvs)
            new_tvs, new_values = original(optimizer_variables, grads, trainable_variables)
            monitor.after_update(pending, list(trainable_variables), list(new_tvs))
            return new_tvs, new_values

        return stateless_apply

    return hooks.wrap_method(optimizer, "stateless_apply", make_wrapper)


def collects_on_device():
    """Whether `make_train_function` keeps the sinks on the device. Not in a
    multi-process job: every process must run the same program, and the
    processes without GradientBoard run Keras's own."""
    return jax.process_count() == 1


def make_train_function(model, sinks):
    """Makes the model's train function anew, with `sinks` collected on the device.

    The step is jitted as Keras's own (`donate_argnums=0`, the distribution's
    state shardings), as a function of its own: JAX caches traces by
    function and Keras jits the bound `model.train_step` each time, so
    `make_train_function(force=True)` alone would reuse a trace made without
    the hook. The sinks' states go in and come out of that function, so no
    value leaves the device until a sink is read.
    """
    sinks = list(sinks) if collects_on_device() else []

    def step(state, sink_states, data):
        global _collecting
        outer, _collecting = _collecting, _Collection(sinks, sink_states)
        try:
            logs, state = type(model).train_step(model, state, data)
            return logs, state, [_collecting[s] for s in sinks]
        finally:
            _collecting = outer

    if not model.run_eagerly and model.jit_compile:
        out_shardings = None
        if keras.distribution.distribution() is not None:
            out_shardings = (None, keras_private.state_sharding_spec(model), None)
        step = jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

    def train_step(state, data):
        logs, state, sink_states = step(state, [s._carried_state() for s in sinks], data)
        for sink, sink_state in zip(sinks, sink_states):
            sink._carry(sink_state)
        return logs, state

    model.train_function = keras_private.make_function(model, train_step)


def first_batch(model, train_function, receive):
    """`train_function` handing the first batch it trains on to `receive`.

    Keras's JAX train function takes `(state, iterator)` and draws its
    batches from the iterator; the first call draws one, hands it over and
    puts it back in front, so the step trains on it as it would have."""
    del model

    def function(state, iterator):
        first = next(iterator)  # StopIteration at the end, as the step's own
        receive(first)
        return train_function(state, itertools.chain([first], iterator))

    return function
