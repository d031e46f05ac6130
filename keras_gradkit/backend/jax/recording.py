"""Recording on JAX: statistics leave the jitted step through
`jax.debug.callback`, and the monitor's hook wraps the optimizer's
`stateless_apply`, which Keras's JAX trainer calls (private)."""

import jax
import keras
import numpy as np
from keras import ops

from keras_gradkit import _recording


class Sink:
    """Keeps, on the host, the latest values a step sent with `jax.debug.callback`.

    The step sends its values whether or not it counts (`when`), so the
    callback runs unconditionally inside the compiled step (also inside a
    `lax.cond` branch); the host keeps the counted ones.
    """

    def __init__(self, spec):
        self._names = set(spec)
        self._latest = None
        self._totals = np.zeros(3, "float64")

    def add(self, name, shapes):
        self._names.add(name)

    def publish(self, when, values, counts):
        jax.debug.callback(self._store, when, values, counts)

    def _store(self, when, values, counts):
        if not bool(np.asarray(when)):
            return
        self._latest = {name: [np.array(v, copy=True) for v in tensors] for name, tensors in values.items()}
        self._totals = self._totals + np.asarray(counts, "float64")

    def read(self):
        jax.effects_barrier()  # callbacks of steps already dispatched have run
        return self._latest, self._totals.copy()


def snapshot(variable):
    """The variable's current value (in a StatelessScope, the mapped one)."""
    return ops.copy(ops.convert_to_tensor(variable))


def install(optimizer, monitor):
    """Wraps `optimizer.stateless_apply` (instance level), which Keras's JAX
    trainer calls, so that `monitor` records each step while active.
    Returns a function that removes it."""

    def make_wrapper(original):
        def stateless_apply(optimizer_variables, grads, trainable_variables):
            if not monitor.active:
                return original(optimizer_variables, grads, trainable_variables)
            tvs = optimizer._trainable_variables
            mapping = list(zip(tvs, trainable_variables)) + list(zip(optimizer.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                pending = monitor.before_update(list(grads), tvs)
            new_tvs, new_values = original(optimizer_variables, grads, trainable_variables)
            monitor.after_update(pending, list(trainable_variables), list(new_tvs))
            return new_tvs, new_values

        return stateless_apply

    return _recording.wrap_method(optimizer, "stateless_apply", make_wrapper)


def make_train_function(model):
    """Makes the model's train function anew, traced anew.

    JAX caches traces by function, and Keras jits the bound `model.train_step`
    each time, so `make_train_function(force=True)` alone would reuse the
    trace made without the hook: the new train function jits a function of
    its own instead (the model keeps no attribute of it)."""

    def train_step(state, data):
        return type(model).train_step(model, state, data)

    model.train_step = train_step
    try:
        model.make_train_function(force=True)
    finally:
        del model.train_step
