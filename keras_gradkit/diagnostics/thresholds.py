"""The kinds of finding and the thresholds that make a measure one.

A kind is added here (its name in `INIT_KINDS` or `TRAINING_KINDS`, its
threshold a field of `Thresholds` with its range in `_RANGES`), judged in
`checks`, explained in `advice`.
"""

import dataclasses
import math

import numpy as np

INIT_KINDS = (
    "vanishing_through_time",
    "exploding_through_time",
    "vanishing_across_depth",
    "exploding_across_depth",
    "non_finite_gradient",
)
TRAINING_KINDS = ("large_updates", "frequent_clipping", "skipped_steps")
KINDS = INIT_KINDS + TRAINING_KINDS

# Below the threshold is a finding for these; above it for the others.
BELOW = frozenset({"vanishing_through_time", "vanishing_across_depth"})

# The `Thresholds` field of a kind whose field is not named after it.
_FIELD_OF_KIND = {
    "large_updates": "update_ratio",
    "frequent_clipping": "clipped_fraction",
    "skipped_steps": "skipped_fraction",
}

# Each field's range: (low, high, whether `high` itself is allowed).
_RANGES = {
    "vanishing_through_time": (0.0, 1.0, False),
    "exploding_through_time": (1.0, math.inf, False),
    "vanishing_across_depth": (0.0, 1.0, False),
    "exploding_across_depth": (1.0, math.inf, False),
    "update_ratio": (0.0, math.inf, False),
    "clipped_fraction": (0.0, 1.0, True),
    "skipped_fraction": (0.0, 1.0, True),
}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Where a measure becomes a finding. The defaults flag Keras's `LSTM`
    and `GRU` on the adding problem at T = 500 and a 20-layer sigmoid MLP at
    initialization, and not an IndRNN with the long-memory initialization, a
    stack of 12 `ResidualIndRNN` blocks or a small CNN (see the guide,
    "Diagnosing gradients").

    Args:
        vanishing_through_time: float in (0, 1): a finding when the mean
            gradient norm of the earliest steps of a sequence (the first
            tenth of its unmasked steps, at least one) is below this
            fraction of its largest step's. Defaults to 1e-3.
        exploding_through_time: float > 1: a finding when the earliest
            steps' mean is above this multiple of the latest steps' (the last
            tenth). Defaults to 100.
        vanishing_across_depth: float in (0, 1): a finding when the gradient
            norm of the first layer with weights is below this fraction of the
            last layer's (models with at least three layers with weights).
            Defaults to 1e-3.
        exploding_across_depth: float > 1: a finding when the first layer's
            gradient norm is above this multiple of the last layer's.
            Defaults to 100.
        update_ratio: float > 0: a finding when the latest update changes a
            layer's weights by more than this fraction of their norm,
            `|w_new - w_old| / |w_new|` over the layer's variables, or when
            the root mean square of that ratio over the updates since the
            previous check, all variables together, is above it (one update
            that moves the weights by their own size, among 30, is 0.18).
            Defaults to 0.1.
        clipped_fraction: float in (0, 1]: a finding when the clipping
            policy changed more than this fraction of the updates since the
            previous check. Defaults to 0.5.
        skipped_fraction: float in (0, 1]: a finding when more than this
            fraction of the updates since the previous check were skipped
            (non-finite gradients). Defaults to 0.25.
    """

    vanishing_through_time: float = 1e-3
    exploding_through_time: float = 100.0
    vanishing_across_depth: float = 1e-3
    exploding_across_depth: float = 100.0
    update_ratio: float = 0.1
    clipped_fraction: float = 0.5
    skipped_fraction: float = 0.25

    def __post_init__(self):
        for name, bounds in _RANGES.items():
            object.__setattr__(self, name, _checked(name, getattr(self, name), *bounds))

    def to_dict(self):
        """The thresholds as a dict (`Thresholds(**d)` gives them back)."""
        return dataclasses.asdict(self)

    def for_kind(self, kind):
        """The threshold of a kind of finding."""
        return getattr(self, _FIELD_OF_KIND.get(kind, kind), 0.0)


def _checked(name, value, low, high, closed):
    """`value` as a float, if it is a number in the range of `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(
            f"Argument `{name}` must be a float. Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    value = float(value)
    if not (low < value and (value <= high if closed else value < high)):
        bound = "]" if closed else ")"
        raise ValueError(
            f"Argument `{name}` must be in ({low:g}, {high:g}{bound}. Received: {name}={value!r}"
        )
    return value


def check_thresholds(thresholds):
    """`thresholds` (None: the defaults; a dict: `Thresholds(**d)`) as
    `Thresholds`; a `TypeError` otherwise."""
    if thresholds is None:
        return Thresholds()
    if isinstance(thresholds, dict):
        return Thresholds(**thresholds)
    if not isinstance(thresholds, Thresholds):
        raise TypeError(
            "Argument `thresholds` must be None, a keras_gradkit.diagnostics.Thresholds or its "
            "`to_dict()`. "
            f"Received: thresholds={thresholds!r} of type {type(thresholds).__name__}"
        )
    return thresholds


def check_kinds(name, kinds):
    """`kinds` (a kind or a sequence of them) as a tuple; unknown kinds are refused."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, (tuple, list, set, frozenset)):
        raise TypeError(
            f"Argument `{name}` must be a kind of finding or a sequence of them. "
            f"Received: {name}={kinds!r} of type {type(kinds).__name__}"
        )
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(
            f"Argument `{name}` holds unknown kinds {unknown}; the kinds are {list(KINDS)}. "
            f"Received: {name}={kinds!r}"
        )
    return tuple(kinds)
