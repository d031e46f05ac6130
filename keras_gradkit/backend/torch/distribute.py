"""How a `ClippedOptimizer` step runs on PyTorch (private): one replica per
process, eagerly, so a skipped update is decided in Python."""

from keras_gradkit.backend.one_replica import check_stateless_apply, run_step

__all__ = ["apply_unless", "check_stateless_apply", "run_step"]


def apply_unless(skip, inner_apply, variables):
    """Runs `inner_apply()` unless `skip` (a concrete bool scalar).

    Args:
        skip: bool scalar tensor.
        inner_apply: the inner optimizer's update.
        variables: the variables it assigns (unused: nothing is traced).
    """
    del variables
    if not bool(skip):
        inner_apply()
