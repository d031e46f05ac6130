"""A recording sink made of `keras.Variable`s (TensorFlow, PyTorch; private).

The variables belong to no optimizer or layer, so nothing Keras saves
changes. They are assigned inside the step, wherever it runs, and created
outside any trace, under the distribution strategy's scope when there is
one. See `keras_gradkit.recording.contract.Sink`.
"""

import keras
import numpy as np
from keras import ops

from keras_gradkit import backend

# The step's ops: Keras's, or (PyTorch, eager) the backend's own.
_step_ops = backend.get("step_ops")


class VariableSink:
    """The latest values a step published, and running totals of its counts.

    Args:
        spec: `{name: [shape, ...]}` of the float32 values a step publishes.
        num_totals: the length of the counts vector a step adds to the totals.
    """

    def __init__(self, spec, num_totals):
        self._variables = {}
        self._published = self._variable("published", (), 0.0)
        self._totals = self._variable("totals", (num_totals,), 0.0)
        for name, shapes in spec.items():
            self.add(name, shapes)

    def _variable(self, name, shape, value=0.0):
        return keras.Variable(
            np.full(shape, value, "float32"),
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            autocast=False,  # read and written as the float32 it holds
            name=f"gradkit_recording_{name}",
        )

    def add(self, name, shapes):
        self._variables[name] = [
            self._variable(f"{name}_{i}", shape) for i, shape in enumerate(shapes)
        ]

    def publish(self, when, values, counts):
        # The flag and the totals are assigned before the values: on
        # TensorFlow, 8 gradient copies assigned before them made a step of
        # two LSTM(64) layers 1.5 ms (9%) slower in `fit`; after them, no
        # slower than without the copies (benchmarks/README.md, "A
        # callback's whole cost").
        xp = _step_ops
        if when is True:  # known before the step runs: nothing to choose
            xp.assign(self._published, 1.0)
            xp.assign_add(self._totals, counts)
            for name, tensors in values.items():
                for variable, value in zip(self._variables[name], tensors):
                    xp.assign(variable, checked(name, value, variable.shape))
            return
        xp.assign(self._published, xp.where(when, 1.0, self._published))
        xp.assign_add(self._totals, xp.where(when, counts, xp.zeros_like(counts)))
        for name, tensors in values.items():
            for variable, value in zip(self._variables[name], tensors):
                xp.assign(variable, xp.where(when, checked(name, value, variable.shape), variable))

    def read(self):
        published, totals, *flat = [
            np.asarray(ops.convert_to_numpy(t)) for t in self._read_tensors()
        ]
        if not published:
            return None, totals
        values, i = {}, 0
        for name in sorted(self._variables):
            n = len(self._variables[name])
            values[name], i = flat[i : i + n], i + n
        return values, totals

    def _all(self):
        return [self._published, self._totals] + [
            v for name in sorted(self._variables) for v in self._variables[name]
        ]

    def _read_tensors(self):
        return [ops.convert_to_tensor(v) for v in self._all()]


def checked(name, value, shape):
    """`value`, refused (`ValueError`) when its static shape is not `shape`,
    the one its sink keeps for `name` (`where` or a copy would broadcast it).
    Every backend's sink checks with it."""
    got = tuple(value.shape)
    if None not in got and got != tuple(shape):
        raise ValueError(
            f"Cannot publish a value of shape {got} as {name!r}, of shape {tuple(shape)}."
        )
    return value


def check_sinks(sinks):
    """Raises `TypeError` unless every sink is a `VariableSink`: on the
    backends that use them, a train function needs no more than that."""
    for sink in sinks:
        if not isinstance(sink, VariableSink):
            raise TypeError(f"Expected VariableSink sinks on this backend. Received: {sink!r}")
