"""Recording on TensorFlow: a sink of variables read with one compiled call,
and the monitor's hook on the optimizer's `apply` (private)."""

import tensorflow as tf

from keras_gradkit.backend.common import hooks
from keras_gradkit.backend.common.variable_sink import VariableSink, check_sinks
from keras_gradkit.backend.tensorflow.distribute import replica_sum


class Sink(VariableSink):
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


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `hooks.hook_apply`),
    summing the gradients over replicas under a strategy; returns its removal."""
    return hooks.hook_apply(optimizer, monitor, snapshot, replica_sum=replica_sum)


def collects_on_device():
    """No: the step assigns the sinks' variables wherever it runs."""
    return False


def make_train_function(model, sinks):
    """Makes the model's train function anew (traced anew at its first call).

    The sinks need no carrying: they are variables the step assigns, which
    must exist before the trace (a `VariableSink` makes them when created).
    """
    check_sinks(sinks)
    model.make_train_function(force=True)
