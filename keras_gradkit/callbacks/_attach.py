"""Attaching GradientBoard's recording to a model's train function for one
`fit`, and detaching it after (private).

The model's optimizer is left as it is: a `ClippedOptimizer` records its own
steps (its gradient copies are switched on while histograms need them, and
off again after); any other optimizer gets a monitor's hook on its own
`apply` / `stateless_apply` for the duration of `fit`. The train function
traced with the hook is kept for the model, so it is traced once, however
many `fit` calls and GradientBoards follow; a `fit` without GradientBoard
runs the plain train function again.
"""

import contextlib

import keras

from keras_gradkit import _cache, backend, recording
from keras_gradkit.backend import keras_private
from keras_gradkit.callbacks._sources import StepSources, find_clipped_optimizer


class _TracedStep:
    """A model's train function traced with the recording, and the plain
    one it replaced; valid while `compile` has not replaced what it used."""

    def __init__(self, model, function, plain):
        self.function = function
        self.plain = plain
        self.token = keras_private.compile_token(model)

    def is_valid_for(self, model):
        token = keras_private.compile_token(model)
        return len(token) == len(self.token) and all(
            a is b or (not hasattr(a, "__dict__") and a == b) for a, b in zip(token, self.token)
        )


def unwrapped(function):
    """The train function under any wrapper GradientBoard put on it to read
    the first batch (a `fit` that ended before its first step leaves it)."""
    while hasattr(function, "_gradkit_plain"):
        function = function._gradkit_plain
    return function


def _strategy_scope(model):
    """The model's `tf.distribute` strategy scope, or a null context."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


class Attachment:
    """The recording of one `fit`: `sources` to read, and `detach()` to undo it.

    Args:
        model: the compiled model.
        gradients: bool, whether the steps must publish their gradients
            (histograms, the gradient across depth).
    """

    def __init__(self, model, gradients):
        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError(
                "GradientBoard needs a compiled model: call `model.compile(optimizer=...)` first."
            )
        self.model = model
        if model.train_function is not None:
            model.train_function = unwrapped(model.train_function)
        self._remove_hook = None
        self._enabled_gradients = None
        if not optimizer.built:  # as Keras builds it in `apply`: same variable paths
            with _strategy_scope(model), keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(model.trainable_variables)
        clipped = find_clipped_optimizer(optimizer)
        retrace = False
        if clipped is not None and gradients and not clipped.records_gradients:
            with _strategy_scope(model):
                retrace = clipped.enable_gradient_recording()
            self._enabled_gradients = clipped
        if optimizer is clipped:
            self.sources = StepSources(optimizer)
            # The gradient copies are published by the step traced with them on.
            if gradients or retrace or backend.get("recording").collects_on_device():
                self._use_traced_step(retrace)
            return
        monitor = recording.monitor_for(optimizer)
        variables = keras_private.trainable_variables_of(optimizer)
        with _strategy_scope(model):
            retrace = monitor.prepare(variables, gradients and clipped is None) or retrace
        self._remove_hook = backend.get("recording").install(optimizer, monitor)
        monitor.active = True
        self.sources = StepSources(optimizer, monitor)
        self._use_traced_step(retrace)

    def _use_traced_step(self, retrace):
        model = self.model
        found = model.train_function
        traced = _cache.get(model, "traced_step")
        if traced is not None and not retrace and traced.is_valid_for(model):
            if found is not traced.function:
                traced.plain = found
                model.train_function = traced.function
            return
        # A train function already traced without the hook would not record.
        backend.get("recording").make_train_function(model, self.sources.sinks())
        _cache.put(model, "traced_step", _TracedStep(model, model.train_function, found))

    def detach(self):
        """Puts the optimizer and the model's train function back as they were."""
        if self._remove_hook is not None:
            self.sources.monitor.active = False
            self._remove_hook()
            self._remove_hook = None
        if self._enabled_gradients is not None:
            self._enabled_gradients.disable_gradient_recording()
            self._enabled_gradients = None
        traced = _cache.get(self.model, "traced_step")
        if traced is not None and self.model.train_function is traced.function:
            # The next fit without GradientBoard runs the plain train function.
            self.model.train_function = traced.plain
