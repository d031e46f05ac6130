"""Recording on PyTorch: a sink of variables, and the monitor's hook on the
optimizer's `apply` (private). The trainer runs eagerly, so the hook sees
every step."""

from keras import ops

from keras_gradkit import _recording

Sink = _recording.VariableSink


def snapshot(variable):
    """The variable's current value, copied now."""
    return ops.copy(ops.convert_to_tensor(variable))


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `_recording.hook_apply`); returns its removal."""
    return _recording.hook_apply(optimizer, monitor, snapshot)


def collects_on_device():
    """Whether the train function must be made anew to collect the sinks:
    no, the step assigns their variables wherever it runs."""
    return False


def make_train_function(model, sinks=()):
    """Makes the model's train function anew; the sinks are variables the step assigns."""
    model.make_train_function(force=True)
