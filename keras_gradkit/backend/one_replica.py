"""Optimizer steps where Keras runs one replica per process (JAX, PyTorch;
private): a step is its pure part and then its stateful end, in place. JAX
shards one program over its devices (`keras.distribution`), so no replica
sum is needed there either."""


def run_step(compute, finish, inner_apply):
    """Runs one optimizer step where `apply` was called.

    Args:
        compute: `compute(replica_sum, num_replicas)`, the pure part of the
            step, called with `(None, 1)`; returns `(result, grads_for_inner)`.
        finish: `finish(result, inner_update)`, the stateful end of the step;
            it calls `inner_update()` to run the inner optimizer's update
            (unless the step is skipped).
        inner_apply: `inner_apply(grads_for_inner)`, the inner optimizer's update.
    """
    result, grads_for_inner = compute(None, 1)
    finish(result, lambda: inner_apply(grads_for_inner))


def check_stateless_apply():
    """Nothing to check: `stateless_apply` works on this backend."""
