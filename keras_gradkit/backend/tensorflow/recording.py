"""Recording on TensorFlow: a sink of variables read with one compiled call,
and the monitor's hook on the optimizer's `apply` (private)."""

import tensorflow as tf

from keras_gradkit import _recording


class Sink(_recording.VariableSink):
    """Variables assigned in the step; read with one `tf.function` (one device sync)."""

    def add(self, name, shapes):
        super().add(name, shapes)
        self._reader = None

    def _read_tensors(self):
        if getattr(self, "_reader", None) is None:
            variables = self._all()
            self._reader = tf.function(lambda: [tf.identity(v.value) for v in variables])
        return self._reader()


def snapshot(variable):
    """The variable's current value, read now (ordered before later updates)."""
    value = getattr(variable, "value", variable)
    # A resource variable is read now; in a StatelessScope it is a tensor.
    return tf.identity(value.read_value() if hasattr(value, "read_value") else value)


def _replica_sum():
    """Sums gradients over the replicas, inside a replica context; None outside a strategy."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()

    def replica_sum(values):
        present = [g for g in values if g is not None]
        reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
        return [None if g is None else next(reduced) for g in values]

    return replica_sum


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `_recording.hook_apply`),
    summing the gradients over replicas under a strategy; returns its removal."""
    return _recording.hook_apply(optimizer, monitor, snapshot, replica_sum=_replica_sum)


def collects_on_device():
    """Whether the train function must be made anew to collect the sinks:
    no, the step assigns their variables wherever it runs."""
    return False


def make_train_function(model, sinks=()):
    """Makes the model's train function anew (traced anew at its first call);
    the sinks are variables the step assigns."""
    model.make_train_function(force=True)
