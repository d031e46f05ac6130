"""Where GradientBoard's statistics of an optimizer's steps come from (private)."""

import keras

from keras_gradkit import clipping
from keras_gradkit.optimizers import ClippedOptimizer
from keras_gradkit.recording import Totals, optimizer_chain


def find_clipped_optimizer(optimizer):
    """The `ClippedOptimizer` in `optimizer`'s wrapping chain, or None."""
    chain = optimizer_chain(optimizer)
    return next((o for o in chain if isinstance(o, ClippedOptimizer)), None)


class Counts(tuple):
    """`(steps, clipped_steps, skipped_steps)`: running totals of updates."""

    def __new__(cls, steps=0, clipped=0, skipped=0):
        return super().__new__(cls, (steps, clipped, skipped))

    def since(self, earlier):
        return Counts(*(a - b for a, b in zip(self, earlier)))


class StepSources:
    """The statistics of the model optimizer's steps, merged from their sources.

    A `ClippedOptimizer` records its own steps. Any other optimizer (the
    model's, or a `LossScaleOptimizer` around a `ClippedOptimizer`, whose
    skipped steps the `ClippedOptimizer` never sees) is watched by a
    `Monitor`; a `ClippedOptimizer` inside it still reports its clipping.
    Each recorder is read once until `invalidate()` (a read is a device
    synchronization).
    """

    def __init__(self, optimizer, monitor=None):
        self.clipped = find_clipped_optimizer(optimizer)
        self.monitor = monitor
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self._cache = {}

    def invalidate(self):
        """Forgets what was read: the next reads see the latest step."""
        self._cache = {}

    def _read(self, key, read):
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def _own(self):
        if self.clipped is None:
            return None
        return self._read("own", self.clipped.latest_step)

    def _watched(self):
        if self.monitor is None:
            return self._own()
        return self._read("monitor", self.monitor.recorder.latest)

    @property
    def variables(self):
        if self.monitor is not None:
            return self.monitor.recorder.variables
        return self.clipped.watched_variables

    @property
    def has_policy(self):
        """Whether the updates are clipped (a ClippedOptimizer, or Keras's own clipping)."""
        return self.clipped is not None or not isinstance(self.monitor.policy, clipping.NoClip)

    @property
    def intended_clipped(self):
        """The fraction of updates the policy clips by design:
        `AutoClip(percentile=p)` (alone or in a `Chain`) intends 1 - p / 100;
        None for a policy without such an intent."""
        policy = self.clipped.policy if self.clipped is not None else self.monitor.policy
        policies = getattr(policy, "policies", None) or [policy]
        for p in policies:
            if isinstance(p, clipping.AutoClip):
                return 1.0 - float(p.percentile) / 100.0
        return None

    @property
    def can_skip(self):
        """Whether updates can be skipped (a ClippedOptimizer's policy, a LossScaleOptimizer)."""
        return self.clipped is not None or self.loss_scaled

    def latest(self):
        """The latest step's `StepStatistics` (clipping from the ClippedOptimizer), or None."""
        own, latest = self._own(), self._watched()
        if self.monitor is None or latest is None or own is None:
            return latest
        return latest._replace(
            global_norm_clipped=own.global_norm_clipped,
            threshold=own.threshold,
            clipped=own.clipped,
            gradients=own.gradients if own.gradients is not None else latest.gradients,
        )

    def sinks(self):
        """Where the watched steps publish their statistics."""
        recorders = [] if self.clipped is None else [self.clipped.recorder]
        if self.monitor is not None:
            recorders.append(self.monitor.recorder)
        return [r.sink for r in recorders]

    def counts(self):
        """The running `Counts` of updates, clipped ones and skipped ones."""
        steps = clipped = skipped = 0
        if self.clipped is not None:
            # The ClippedOptimizer's saved counters (read once, as the recorders).
            stats = self._read("counters", self.clipped.gradient_statistics)
            steps, clipped, skipped = stats["steps"], stats["clipped_steps"], stats["skipped_steps"]
        latest = self._watched() if self.monitor is not None else None
        if latest is not None:
            if self.clipped is None:
                steps, clipped = latest.steps, latest.clipped_steps
            else:
                steps = max(steps, latest.steps)
            skipped += latest.skipped_steps
        return Counts(steps, clipped, skipped)

    def totals(self):
        """`(norm, clipped)`: the running `Totals` of the recorder that
        measures the global norm (the monitor's, when there is one) and of
        the one that measures the clipping (the ClippedOptimizer's, when
        there is one)."""
        own, watched = self._own(), self._watched()
        norm = watched.totals if watched is not None else Totals()
        clipped = own if own is not None else watched
        return norm, clipped.totals if clipped is not None else Totals()

    def gradients(self):
        """`{variable path: latest applied gradient}` (empty before the first step)."""
        latest = self.latest()
        if latest is None or latest.gradients is None:
            return {}
        return {v.path: g for v, g in zip(self.variables, latest.gradients)}
