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


def snapshots(variables):
    """`[snapshot(v) for v in variables]`."""
    return [snapshot(v) for v in variables]


# A read in the graph is a value ordered where it was made: nothing to save.
values_now = snapshots


def install(optimizer, monitor):
    """Hooks `monitor` on `optimizer.apply` (see `hooks.hook_apply`),
    summing the gradients over replicas under a strategy; returns its removal."""
    return hooks.hook_apply(optimizer, monitor, snapshots, values_now, replica_sum=replica_sum)


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


def first_batch(model, train_function, receive):
    """`train_function` handing the first batch it trains on to `receive`.

    Keras's TensorFlow train function takes the epoch's `tf.data` iterator.
    The first call takes one execution's batches (`steps_per_execution`)
    from it and trains on them through an iterator of the same element
    spec, so the traced step is reused: the run trains on the same batches
    in the same order (if `from_generator` cannot make that iterator, a
    list of the batches, which Keras's train function steps through with a
    trace of its own). A distributed iterator is passed on unread
    (`receive(None)`): its batches are per-replica values.
    """

    def function(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            receive(None)
            return train_function(iterator)
        batches = [iterator.get_next()]  # OutOfRangeError at the end, as the step's own
        for _ in range(model.steps_per_execution - 1):
            more = iterator.get_next_as_optional()
            if not more.has_value():
                break
            batches.append(more.get_value())
        receive(batches[0])
        try:
            replay = iter(
                tf.data.Dataset.from_generator(
                    lambda: iter(batches), output_signature=iterator.element_spec
                )
            )
        except Exception:  # an element spec `from_generator` does not take
            replay = batches  # Keras steps through a list too, with a trace of its own
        return train_function(replay)

    return function
