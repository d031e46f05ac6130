"""How a `ClippedOptimizer` step runs on TensorFlow (private): in the replica
context of a `tf.distribute` strategy, the gradient the update uses is the
sum over the replicas, and a skipped update is a traced `cond`.

Keras's TensorFlow trainer calls `apply` in each replica. Under a strategy
that supports it (`MirroredStrategy` on the CPU and GPU) the whole step runs
in the replica context; otherwise its stateful end runs once, in a
`merge_call`, and the inner optimizer's update in each replica again.
"""

import tensorflow as tf
from keras import ops


def replica_sum():
    """A function summing a list of gradients (None entries kept) over the
    replicas, inside a replica context; None outside a strategy."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()

    def summed(values):
        present = [g for g in values if g is not None]
        reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
        return [None if g is None else next(reduced) for g in values]

    return summed


def run_step(compute, finish, inner_apply):
    """Runs one optimizer step where `apply` was called.

    Args:
        compute: `compute(replica_sum, num_replicas)`, the pure part of the
            step; returns `(result, grads_for_inner)`. `replica_sum` sums a
            list of gradients (None entries kept) over the replicas; it is
            None outside a strategy, where `num_replicas` is 1.
        finish: `finish(result, inner_update)`, the stateful end of the step;
            it calls `inner_update()` to run the inner optimizer's update
            (unless the step is skipped).
        inner_apply: `inner_apply(grads_for_inner)`, the inner optimizer's
            update, run in the replica context.

    Raises:
        ValueError: when called in a cross-replica context.
    """
    if tf.distribute.in_cross_replica_context():
        raise ValueError("apply() must be called in a replica context.")
    if not tf.distribute.has_strategy():
        result, grads_for_inner = compute(None, 1)
        finish(result, lambda: inner_apply(grads_for_inner))
        return
    context = tf.distribute.get_replica_context()
    result, grads_for_inner = compute(replica_sum(), context.num_replicas_in_sync)
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        finish(result, lambda: inner_apply(grads_for_inner))
        return

    def cross_replica(distribution, result, grads_for_inner):
        def first(x):
            return distribution.experimental_local_results(x)[0]

        local = tf.nest.map_structure(lambda x: x if x is None else first(x), result)
        finish(
            local,
            lambda: distribution.extended.call_for_each_replica(
                inner_apply, args=(grads_for_inner,)
            ),
        )

    context.merge_call(cross_replica, args=(result, grads_for_inner))


def check_stateless_apply():
    """Raises: `stateless_apply` is not for TensorFlow, as for Keras's optimizers."""
    raise ValueError(
        "stateless_apply is not supported with the TensorFlow backend (as it is incompatible with "
        "tf.distribute), as for Keras's own optimizers. Use `apply`."
    )


def apply_unless(skip, inner_apply, variables):
    """Runs `inner_apply()` unless `skip`, as a `cond` (TensorFlow assigns
    variables inside a traced branch).

    Args:
        skip: bool scalar tensor.
        inner_apply: the inner optimizer's update.
        variables: the variables it assigns (unused here).
    """
    del variables
    ops.cond(skip, lambda: None, inner_apply)
