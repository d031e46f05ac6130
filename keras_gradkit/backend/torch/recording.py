"""Recording on PyTorch: a sink of variables, and the monitor's hook on the
optimizer's `apply` (private). The trainer runs eagerly, so the hook sees
every step."""

from keras_gradkit.backend import keras_private
from keras_gradkit.backend.common import hooks
from keras_gradkit.backend.common.variable_sink import VariableSink, check_sinks, checked
from keras_gradkit.backend.torch import foreach, step_ops


class Sink(VariableSink):
    """A `VariableSink` whose step, when it counts in any case (`when` is
    the Python `True`), writes all its variables with one multi-tensor copy.

    The variables' storage is read once (they do not autocast, and outside a
    `keras.StatelessScope` a variable's value is its storage, which Keras's
    own `assign` writes in place); in a scope, the sink writes as Keras does.
    """

    def __init__(self, spec, num_totals):
        self._storage = None  # {name: the variables' storage}, read at the first write
        super().__init__(spec, num_totals)

    def add(self, name, shapes):
        super().add(name, shapes)
        self._storage = None

    def publish(self, when, values, counts):
        if when is not True or keras_private.in_stateless_scope():
            super().publish(when, values, counts)
            return
        if self._storage is None:
            self._storage = {
                name: [v.value for v in variables] for name, variables in self._variables.items()
            }
            self._storage[None] = [self._published.value, self._totals.value]
        published, totals = self._storage[None]
        targets = [published, totals]
        sources = [published.new_ones(()), totals + step_ops.convert_to_tensor(counts)]
        for name, tensors in values.items():  # after the flag and the totals, as the base
            for target, value in zip(self._storage[name], tensors, strict=True):
                targets.append(target)
                sources.append(checked(name, step_ops.convert_to_tensor(value), target.shape))
        foreach.copy_into(targets, sources)


def snapshot(variable):
    """The variable's current value, copied now."""
    return step_ops.copy(variable)


def snapshots(variables):
    """The variables' current values, copied now (one call for all)."""
    return foreach.clones(values_now(variables))


def values_now(variables):
    """The variables' storage itself, outside autograd: the step runs
    eagerly, so what is computed from it now precedes any later update. In
    a `keras.StatelessScope`, the values the scope holds."""
    if keras_private.in_stateless_scope():
        return [step_ops.convert_to_tensor(v).detach() for v in variables]
    return [t.detach() for t in keras_private.storage_of(variables)]


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `hooks.hook_apply`); returns its removal."""
    return hooks.hook_apply(optimizer, monitor, snapshots, values_now)


def collects_on_device():
    """No: the step assigns the sinks' variables wherever it runs."""
    return False


def make_train_function(model, sinks):
    """Makes the model's train function anew (eager: the hook is in every
    step). The sinks need no carrying: they are variables the step assigns."""
    check_sinks(sinks)
    model.make_train_function(force=True)


def first_batch(model, train_function, receive):
    """`train_function` handing the first batch it trains on to `receive`.

    Keras's PyTorch train function takes a list of one batch, which it
    reads only."""
    del model

    def function(data):
        receive(data[0])
        return train_function(data)

    return function
