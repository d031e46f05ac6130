"""Recording on PyTorch: a sink of variables, and the monitor's hook on the
optimizer's `apply` (private). The trainer runs eagerly, so the hook sees
every step."""

from keras_gradkit.backend.common import hooks
from keras_gradkit.backend.common.variable_sink import VariableSink, check_sinks
from keras_gradkit.backend.torch import step_ops

Sink = VariableSink


def snapshot(variable):
    """The variable's current value, copied now."""
    return step_ops.copy(variable)


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `hooks.hook_apply`); returns its removal."""
    return hooks.hook_apply(optimizer, monitor, snapshot)


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
