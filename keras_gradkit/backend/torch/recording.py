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


def make_train_function(model):
    """Makes the model's train function anew (traced anew at its first call)."""
    model.make_train_function(force=True)
