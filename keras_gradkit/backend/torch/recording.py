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
    """Wraps `optimizer.apply` (instance level) so that `monitor` records each step while active.

    Returns a function that removes the wrapper again."""
    had_own = "apply" in optimizer.__dict__
    original = optimizer.apply

    def apply(grads, trainable_variables=None):
        if not monitor.active:
            return original(grads, trainable_variables)
        grads = list(grads)
        tvs = optimizer._trainable_variables if trainable_variables is None else list(trainable_variables)
        pending = monitor.before_update(grads, tvs)
        before = [snapshot(v) for v in tvs]
        result = original(grads, trainable_variables)
        monitor.after_update(pending, before, [snapshot(v) for v in tvs])
        return result

    optimizer.apply = apply

    def remove():
        if had_own:
            optimizer.apply = original
        else:
            optimizer.__dict__.pop("apply", None)

    return remove


def make_train_function(model):
    """Makes the model's train function anew (traced anew at its first call)."""
    model.make_train_function(force=True)
