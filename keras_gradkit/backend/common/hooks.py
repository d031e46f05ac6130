"""Hooks on an optimizer object's own methods (private): how a monitor sees
each step without replacing the optimizer. A hook is an instance-level
attribute, removed again after `fit`; the optimizer keeps its class, its
variables and its config, and Keras does not save a plain attribute.

The monitor is any object with `active`, `before_update(grads, variables,
replica_sum)` and `after_update(pending, before, after)`
(`keras_gradkit.recording.Monitor`).
"""

from keras_gradkit.backend import keras_private


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


def hook_apply(optimizer, monitor, snapshots, values_now, replica_sum=lambda: None):
    """Wraps `optimizer.apply` so that `monitor` records each step while
    active (the trainers of TensorFlow and PyTorch call `apply`).

    Args:
        snapshots: the backend's copy of variables' current values
            (`recording.snapshots`), for the values before the update.
        values_now: the backend's read of them for immediate use
            (`recording.values_now`), for the values after it.
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
                keras_private.trainable_variables_of(optimizer)
                if trainable_variables is None
                else list(trainable_variables)
            )
            pending = monitor.before_update(grads, tvs, replica_sum())
            before = snapshots(tvs)  # reads, ordered before the update
            result = original(grads, trainable_variables)
            monitor.after_update(pending, before, values_now(tvs))
            return result

        return apply

    return wrap_method(optimizer, "apply", make_wrapper)
