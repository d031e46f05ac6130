"""Keras's private API that keras_gradkit cannot do without (private).

Every read of a private Keras name in the package goes through this module,
each with the reason there is no public route, so that a change in Keras
breaks here, visibly, and nowhere else: `tests/test_keras_private.py` calls
each function against the installed Keras and fails loudly if a name moved.

`DropoutRNNCell`: `keras.layers.RNN` creates a cell's dropout masks before its
loop, and forgets them after the call, only for a cell that is an instance of
this class, which Keras does not export. A cell outside it would have to
create its masks inside the loop: under JAX's `lax.scan` the mask is then a
tracer that escapes the loop, and TensorFlow's and PyTorch's loops would keep
the first mask for every later call. `keras_gradkit.layers.IndRNNCell`
writes its masks itself with public API and uses the class only as the mark
that `keras.layers.RNN` looks for.
"""

from keras import ops
from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

__all__ = [
    "DropoutRNNCell",
    "accumulated_gradient",
    "compiled_loss",
    "compile_token",
    "flatten_layers",
    "in_stateless_scope",
    "keras_mask",
    "make_function",
    "micro_step_count",
    "own_variables",
    "storage_of",
    "state_sharding_spec",
    "torch_device",
    "trainable_variables_of",
    "variable_index",
]


# ------------------------------------------------------------- variables
def in_stateless_scope():
    """Whether a `keras.StatelessScope` is open: a variable's `assign` there
    is kept by the scope instead of written. Keras exports the scope, not
    this test of it; PyTorch's step ops (`backend/torch/step_ops.py`), which
    write variables in place, ask it so as to leave such writes to Keras."""
    return _in_stateless_scope()


def storage_of(variables):
    """Each variable's own storage (`_value`), as its `value` returns it
    outside a `keras.StatelessScope` and an autocast scope: the eager
    PyTorch step reads every weight twice a step, and `value` checks both
    scopes at each read. Keras has no public read without those checks.
    Call it outside a `keras.StatelessScope` only."""
    return [v._value for v in variables]


def torch_device():
    """Keras's device on PyTorch: where its `convert_to_tensor` puts a tensor
    (a `keras.device` scope's, else its default, `"cuda"` where there is a
    GPU). Keras exports the scope, not the reading of it; PyTorch's step ops
    ask it once per list of tensors, to move a tensor where Keras would
    without Keras's checks of each argument. Call it on PyTorch only."""
    from keras.src.backend.torch.core import get_device

    return get_device()


# ------------------------------------------------------------- optimizers
def trainable_variables_of(optimizer):
    """The variables a built optimizer updates, in its order. Keras keeps
    them as `_trainable_variables` and exposes no public list (its
    `variables` are the optimizer's own slots)."""
    return list(optimizer._trainable_variables)


def own_variables(optimizer):
    """The variables an optimizer created itself (`_variables`): a wrapper's
    `variables` are these plus its inner optimizer's, as Keras's own
    `LossScaleOptimizer` composes them; `variables` is overridden there, so
    only the private list holds the wrapper's own."""
    return list(optimizer._variables)


def variable_index(optimizer, variable):
    """The position of `variable` among `trainable_variables_of(optimizer)`
    (Keras's own lookup, by the variable's key, `_get_variable_index`)."""
    return optimizer._get_variable_index(variable)


def micro_step_count(optimizer):
    """The count of `apply` calls, micro-steps included, as a tensor. Under
    `gradient_accumulation_steps` the public `iterations` counts updates
    only; Keras counts the micro-steps in `_iterations`."""
    return ops.convert_to_tensor(optimizer._iterations)


def accumulated_gradient(optimizer, variable):
    """The gradient accumulated so far for `variable` under
    `gradient_accumulation_steps`, as a tensor (`_accumulated_gradients`,
    not exposed)."""
    return ops.convert_to_tensor(
        optimizer._accumulated_gradients[variable_index(optimizer, variable)]
    )


# ----------------------------------------------------------------- models
def compiled_loss(model):
    """The loss object `compile` made (`_compile_loss`), or None before
    `compile`; Keras has no public accessor for it (`model.loss` is what
    the user passed)."""
    return getattr(model, "_compile_loss", None)


def compile_token(model):
    """What `compile` replaces, so that a train function traced before can
    be recognized as still valid: the optimizer, the compiled loss and
    metrics objects (`_compile_loss`, `_compile_metrics`: `compile` makes
    new ones, the public `loss`/`metrics` attributes do not change with
    them) and the execution settings."""
    return (
        model.optimizer,
        compiled_loss(model),
        getattr(model, "_compile_metrics", None),
        model.steps_per_execution,
        model.jit_compile,
        model.run_eagerly,
    )


def make_function(model, step):
    """The trainer's wrapper that turns a one-batch `step(state, data)` into
    the train function `fit` calls (`steps_per_execution`, iterators): JAX's
    `_make_function`, which `make_train_function` uses and does not expose."""
    return model._make_function(step)


def state_sharding_spec(model):
    """The shardings of the JAX training state under a `keras.distribution`
    (`_get_state_sharding_spec`), which Keras's own jitted step uses."""
    return model._get_state_sharding_spec()


# ----------------------------------------------------------------- layers
def keras_mask(tensor):
    """The mask Keras attached to a symbolic or eager tensor
    (`Embedding(mask_zero=True)`, `Masking`), or None; Keras reads it with
    its private `backend.get_keras_mask` and sets `_keras_mask`."""
    return getattr(tensor, "_keras_mask", None)


def producing_operation(tensor):
    """The operation (layer) that made a symbolic tensor, or None: its
    `_keras_history`, which Keras's functional graph is built from (a
    Sequential's `InputLayer` is not among its public `layers`)."""
    return getattr(getattr(tensor, "_keras_history", None), "operation", None)


def flatten_layers(layer):
    """The layer and every layer nested in it (`_flatten_layers`, which
    Keras uses for the same walk; no public equivalent covers sublayers
    kept in plain attributes)."""
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten()) if flatten is not None else [layer]
