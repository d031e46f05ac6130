"""A callback's whole cost in `fit`, measured apart from the rest of `fit`
(shared by `gradboard_overhead.py` and `diagnose_cost.py`).

The wall-time ratio of a fit with a callback to a plain fit compares two
model instances, and on this machine two instances of the same model differ
by a few percent in their step time (on TensorFlow one read 0.4 ms a step,
2%, faster than the other with no work of its own in the step). A callback's
cost is therefore measured in two parts, each on its own model:

- **its methods** (those it overrides: `on_train_begin`, `on_epoch_end`,
  ...), timed inside the fits (`MethodClock`);
- **its cost inside the steps** (GradientBoard's recording is traced into
  the step on TensorFlow and JAX): each step is timed from the last
  callback's `on_train_batch_begin` to the first one's `on_train_batch_end`
  (`step_clocks`; Keras calls the callbacks in order and reads the step's
  logs back before any `on_train_batch_end`), in fits of the same model with
  its callbacks and without any, a pair per round (`step_times`). The cost
  is the mean over the rounds of (the fit's mean step with - without), so
  occasional slow steps count, with a 95% bootstrap interval over the
  rounds; the same with the fits' median steps is printed beside it, and a
  fit's first step is compared apart.

Whole cost per epoch = methods + cost in the steps x (steps per epoch -
fits per epoch) + the first-step extra x fits per epoch (`whole_cost`).

Limits: the step clocks override `on_train_batch_end`, so Keras dispatches
the batch callbacks synchronously in every timed fit. Keras's TensorBoard
forces that in real use too; a plain fit, or GradientBoard with
`update_freq="epoch"`, may dispatch them on a thread on JAX and PyTorch,
which no row here charges to anyone (Keras TensorBoard's cost is, if
anything, understated). The intervals are percentile bootstraps over a few
rounds (they cover less than their nominal 95%), and the methods and the
first-step extra enter as constants; the plain fit's row, with no callback
either way, shows how far from zero the noise alone reads.
"""

import collections
import time

import numpy as np

CALLBACK_METHODS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
)


def timed_calls(fn, add):
    """`fn`, wrapped so that each call's time (ms) goes to `add(ms)`."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add((time.perf_counter() - start) * 1e3)

    return wrapper


class MethodClock:
    """Times the methods each callback overrides, as a total per key."""

    def __init__(self):
        self.ms = collections.Counter()

    def attach(self, key, callbacks):
        import keras

        for callback in callbacks:
            for name in CALLBACK_METHODS:
                if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name):
                    self.add(key, callback, name)

    def add(self, key, obj, attribute):
        """Wraps `obj.<attribute>` so that its time adds to `self.ms[key]`."""

        def add(ms):
            self.ms[key] += ms

        setattr(obj, attribute, timed_calls(getattr(obj, attribute), add))


class ApplyClock:
    """PyTorch (eager steps): times the optimizer's `apply` in every step of
    the fits, from outside any hook that GradientBoard puts on it ("outer")
    and from inside it ("inner": the optimizer's own `apply`).

    Outer minus inner is the hook's whole work in the step, timed directly
    (the monitor's measures, the copy of the weights before the update, the
    read after it, the sink's writes, the hook's own call), without the
    step-to-step noise of comparing whole steps. Without a hook it reads the
    clock's own cost (a few microseconds). Not counted: what the hook's work
    does to the rest of the step (the caches it evicts). A
    `ClippedOptimizer` records in its own `apply`, with or without a board:
    what a board adds there shows as the outer time with the board minus
    without, on the same model.

    `instrument(optimizer)` once per model, before its first fit; then
    `callback(key, optimizer)` last in each timed fit's callback list (after
    the board, whose `on_train_begin` installs its hook).
    """

    def __init__(self):
        self.outer = collections.Counter()  # ms in total, per key
        self.inner = collections.Counter()
        self.steps = collections.Counter()
        self._key = None

    def instrument(self, optimizer):
        def add(ms):
            self.inner[self._key] += ms

        # An instance attribute: a board's hook wraps it.
        optimizer.apply = timed_calls(optimizer.apply, add)

    def callback(self, key, optimizer):
        import keras

        clock = self

        class Outer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                clock._key = key
                hooked = optimizer.apply  # the board's hook, or the inner clock

                def add(ms):
                    clock.outer[key] += ms
                    clock.steps[key] += 1

                outer = timed_calls(hooked, add)
                self._hooked, self._outer = hooked, outer
                optimizer.apply = outer

            def on_train_end(self, logs=None):
                # A board removing its hook has put the inner clock back already.
                if optimizer.__dict__.get("apply") is self._outer:
                    optimizer.apply = self._hooked
                clock._key = None

        return Outer()

    def per_step(self, key):
        """(outer, inner, outer - inner) ms per step for `key`, or None."""
        n = self.steps[key]
        if not n:
            return None
        outer, inner = self.outer[key] / n, self.inner[key] / n
        return outer, inner, outer - inner

    def clear(self):
        self.outer.clear()
        self.inner.clear()
        self.steps.clear()


def step_clocks(times):
    """Two callbacks that time each training step into `times` (ms): put the
    first first and the second last in the callback list."""
    import keras

    started = []
    end, begin = keras.callbacks.Callback(), keras.callbacks.Callback()
    begin.on_train_batch_begin = lambda batch, logs=None: started.append(time.perf_counter())
    end.on_train_batch_end = lambda batch, logs=None: times.append(
        (time.perf_counter() - started.pop()) * 1e3
    )
    return end, begin


def step_times(runs, fit, rounds, steps_per_epoch):
    """Step times of each configuration's model with its callbacks and
    without any, in 2-epoch fits, a pair of fits per round (the order
    rotated each round, and within the pair alternated).

    Args:
        runs: {configuration: (model, callbacks)}.
        fit: `fit(model, callbacks, epochs)`.

    Returns:
        {(configuration, with_callbacks): [(first, [ms of the other steps])]},
        one entry per round.
    """
    samples = collections.defaultdict(list)
    names = list(runs)
    for model, _ in runs.values():  # the plain train function made, untimed
        fit(model, [], 1)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            model, callbacks = runs[name]
            for with_callbacks in (True, False) if r % 2 == 0 else (False, True):
                times = []
                end, begin = step_clocks(times)
                fit(model, [end, *(callbacks if with_callbacks else []), begin], 2)
                if len(times) != 2 * steps_per_epoch:
                    raise RuntimeError(
                        f"{name}: {len(times)} steps timed, expected {2 * steps_per_epoch}"
                    )
                samples[name, with_callbacks].append((times[0], times[1:]))
    return samples


def _paired(on, off, rng, resamples=2000):
    """Mean over the rounds of (with - without), and a 95% bootstrap interval
    over the rounds (steps within a fit are not independent of each other)."""
    d = np.asarray(on) - np.asarray(off)
    boot = rng.choice(d, (resamples, d.size)).mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return d.mean(), low, high


def whole_cost(samples, methods_per_epoch, steps_per_epoch, fits_per_epoch, keras_key, boards):
    """Prints each configuration's cost in its steps and its whole cost per
    epoch, and whether each of `boards` costs no more than `keras_key`.

    Args:
        samples: from `step_times`.
        methods_per_epoch: {configuration: ms of its callbacks' methods per epoch}.
        fits_per_epoch: fit calls per epoch where the methods were timed.

    Returns:
        {configuration: (total, low, high)}.
    """
    rng = np.random.default_rng(0)
    names = list(dict.fromkeys(name for name, _ in samples))
    rounds = len(samples[names[0], True])
    print(
        f"\nthe steps alone, each configuration's model with its callbacks and without any "
        f"({rounds} rounds of a 2-epoch fit each way): ms per step, (the fit's mean step with - "
        "without) and (its median step with - without), each a mean over the rounds [95% bootstrap "
        "interval over the rounds]; a fit's first step apart"
    )
    rows, totals = [], {}
    for name in names:
        on, off = samples[name, True], samples[name, False]
        median, m_low, m_high = _paired(
            [np.median(steps) for _, steps in on], [np.median(steps) for _, steps in off], rng
        )
        extra, low, high = _paired(
            [np.mean(steps) for _, steps in on], [np.mean(steps) for _, steps in off], rng
        )
        first = float(np.mean([a for a, _ in on]) - np.mean([b for b, _ in off]))
        typical = np.median([np.median(steps) for _, steps in off])
        print(
            f"  {name}: mean {extra:+.3f} [{low:+.3f}, {high:+.3f}], median {median:+.3f} "
            f"[{m_low:+.3f}, {m_high:+.3f}], on a {typical:.2f} ms step; first step {first:+.2f}"
        )
        methods = methods_per_epoch.get(name, 0.0)
        fixed = methods + first * fits_per_epoch
        others = steps_per_epoch - fits_per_epoch  # steps per epoch that are not a fit's first
        total = tuple(fixed + v * others for v in (extra, low, high))
        totals[name] = total
        rows.append((name, methods, extra * others, first * fits_per_epoch, total))
    print(
        f"\neach callback's whole cost, ms per epoch of {steps_per_epoch} steps = its methods + its "
        f"cost in the steps (mean) x {steps_per_epoch - fits_per_epoch:.2f} + its first-step extra x "
        f"{fits_per_epoch:.2f} fits per epoch [interval from the steps']"
    )
    print(
        "| configuration | methods | in the steps | first steps | whole cost | interval "
        "| against Keras TensorBoard |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    keras_total = totals.get(keras_key)
    for name, methods, in_steps, firsts, (total, low, high) in rows:
        verdict = ""
        if name in boards and keras_total is not None:
            met = "met" if total <= keras_total[0] else "NOT met"
            apart = ", the intervals apart" if high < keras_total[1] else ""
            verdict = f"{total / keras_total[0]:.2f}x, {met}{apart}"
        print(
            f"| {name} | {methods:.1f} | {in_steps:+.1f} | {firsts:+.1f} | **{total:.1f}** | "
            f"{low:.1f} to {high:.1f} | {verdict} |"
        )
    return totals
