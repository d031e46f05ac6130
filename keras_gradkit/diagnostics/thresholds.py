"""The kinds of finding and the thresholds that make a measure one.

A kind is added here (its name in `INIT_KINDS` or `TRAINING_KINDS`, its
threshold a field of `Thresholds` with its range in `_RANGES`), judged in
`checks`, explained in `advice`.
"""

import dataclasses
import math
import reprlib

import numpy as np

INIT_KINDS = (
    "vanishing_through_time",
    "exploding_through_time",
    "vanishing_across_depth",
    "exploding_across_depth",
    "non_finite_gradient",
    "non_finite_forward",
    "output_loss_mismatch",
    "unscaled_inputs",
    "zero_gradient",
    "dead_units",
    "saturated_units",
)
TRAINING_KINDS = (
    "large_updates",
    "frequent_clipping",
    "skipped_steps",
    "unchanged_weights",
    "loss_not_decreasing",
)
KINDS = INIT_KINDS + TRAINING_KINDS

# Below the threshold is a finding for these; above it for the others.
BELOW = frozenset({"vanishing_through_time", "vanishing_across_depth", "loss_not_decreasing"})

# Kinds without a threshold: what they measure is exact (a zero, a NaN, an
# unchanged weight) or structural (an output that does not fit its loss).
EXACT = frozenset(
    {
        "non_finite_gradient",
        "non_finite_forward",
        "output_loss_mismatch",
        "zero_gradient",
        "unchanged_weights",
    }
)

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
    "dead_units": (0.0, 1.0, True),
    "saturated_units": (0.0, 1.0, True),
    "unscaled_inputs": (1.0, math.inf, False),
    "loss_not_decreasing": (0.0, 1.0, False),
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
            previous check and the clip dominates the step (it leaves less
            than a tenth of the gradient's norm, on average); for `AutoClip`,
            which clips most steps by design, only when the fraction is also
            more than halfway from its intent to every step. Defaults to 0.5.
        skipped_fraction: float in (0, 1]: a finding when more than this
            fraction of the updates since the previous check were skipped
            (non-finite gradients). Defaults to 0.25.
        dead_units: float in (0, 1]: a finding when more than this fraction
            of a layer's ReLU units (`relu`, `relu6`, `ReLU` without a
            negative slope, the layer's `activation=` or a separate
            activation layer; not recurrent layers) output 0 for every
            sample and position of the
            batch (a batch of at least 16 rows: in fewer, a healthy unit
            is often 0 for all by chance). Defaults to 0.5.
        saturated_units: float in (0, 1]: a finding when more than this
            fraction of a hidden layer's `sigmoid`, `tanh`, `hard_sigmoid` or
            `softsign` outputs, over the batch, are saturated: the
            activation's derivative there is below 1% of its largest
            (`|x| > 4.6` for sigmoid, `|x| > 3.0` for tanh). Defaults to 0.5.
        unscaled_inputs: float > 1: a finding when a float input feature's
            root mean square over the batch (or, for a regression loss, the
            targets') is above this, or the whole input's is below its
            inverse. Inputs that go first through a normalizing or
            embedding layer are not measured. Defaults to 100.
        loss_not_decreasing: float in (0, 1): during training, a finding
            when the loss Keras logs at each check has never moved from its
            value at the first check by more than this fraction of it, over
            at least two further checks, while the gradient is not zero.
            Defaults to 0.01.
    """

    vanishing_through_time: float = 1e-3
    exploding_through_time: float = 100.0
    vanishing_across_depth: float = 1e-3
    exploding_across_depth: float = 100.0
    update_ratio: float = 0.1
    clipped_fraction: float = 0.5
    skipped_fraction: float = 0.25
    dead_units: float = 0.5
    saturated_units: float = 0.5
    unscaled_inputs: float = 100.0
    loss_not_decreasing: float = 1e-3

    def __post_init__(self):
        for name, bounds in _RANGES.items():
            object.__setattr__(self, name, _checked(name, getattr(self, name), *bounds))

    def to_dict(self):
        """The thresholds as a dict (`Thresholds(**d)` gives them back)."""
        return dataclasses.asdict(self)

    def for_kind(self, kind):
        """The threshold of a kind of finding (0 for the `EXACT` kinds)."""
        return getattr(self, _FIELD_OF_KIND.get(kind, kind), 0.0)


def _checked(name, value, low, high, closed):
    """`value` as a float, if it is a number in the range of `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(
            f"Argument `{name}` must be a float. Received: {name}={reprlib.repr(value)} of type "
            f"{type(value).__name__}"
        )
    value = float(value)
    if not (low < value and (value <= high if closed else value < high)):
        bound = "]" if closed else ")"
        raise ValueError(
            f"Argument `{name}` must be in ({low:g}, {high:g}{bound}. Received: {name}={reprlib.repr(value)}"
        )
    return value


def check_thresholds(thresholds):
    """`thresholds` (None: the defaults; a dict: `Thresholds(**d)`) as
    `Thresholds`; a `TypeError` otherwise."""
    if thresholds is None:
        return Thresholds()
    if isinstance(thresholds, dict):
        fields = {f.name for f in dataclasses.fields(Thresholds)}
        unknown = sorted(str(k) for k in thresholds if k not in fields)
        if unknown:
            raise ValueError(
                f"Argument `thresholds` holds unknown keys {reprlib.repr(unknown)}; the keys are "
                f"{sorted(fields)}. Received: thresholds={reprlib.repr(thresholds)}"
            )
        return Thresholds(**thresholds)
    if not isinstance(thresholds, Thresholds):
        raise TypeError(
            "Argument `thresholds` must be None, a keras_gradkit.diagnostics.Thresholds or its "
            "`to_dict()`. "
            f"Received: thresholds={reprlib.repr(thresholds)} of type {type(thresholds).__name__}"
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
