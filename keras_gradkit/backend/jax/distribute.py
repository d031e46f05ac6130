"""How a `ClippedOptimizer` step runs on JAX (private): one replica per
process, and a skipped update undone when the skip is known only inside a
traced step (JAX assigns no variable inside a traced branch)."""

import jax
from keras import ops

from keras_gradkit.backend.one_replica import check_stateless_apply, run_step

__all__ = ["apply_unless", "check_stateless_apply", "run_step"]


def apply_unless(skip, inner_apply, variables):
    """Runs `inner_apply()` unless `skip`.

    A concrete `skip` (eager) decides in Python. Inside a traced step (a
    `jax.core.Tracer`) the update runs and a skipped one is undone: each of
    `variables` gets back its value from before the update.

    Args:
        skip: bool scalar.
        inner_apply: the inner optimizer's update.
        variables: every variable it may assign (the model's and the inner
            optimizer's).
    """
    if not isinstance(skip, jax.core.Tracer):
        if not bool(skip):
            inner_apply()
        return
    before = [ops.convert_to_tensor(v) for v in variables]
    inner_apply()
    for v, old in zip(variables, before):
        v.assign(ops.where(skip, old, ops.convert_to_tensor(v)))
