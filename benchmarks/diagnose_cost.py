"""What the gradient doctor costs: `keras_gradkit.diagnose` against a training
step, and GradientBoard's checks inside `fit`.

Part 1, `diagnose` (`--part cost`). The claim: a warm `diagnose(model, x, y)`
takes at most the time of (3 + number of recurrent layers) training steps on
its batch (one forward and backward pass for the weights, one per probed
sequence: the model input and each top-level recurrent layer's input). Four
models, batch 32, Adam, `jit_compile="auto"` (Keras's default: XLA on JAX
only), seed 0:

- `LSTM(32)`: `Input((T, 2)) -> LSTM(32) -> Dense(1)`, MSE, on the adding
  problem (two marked values of a uniform sequence; the target is their sum);
- `2 x LSTM(32)`: the same with `LSTM(32, return_sequences=True)` before;
- `MLP, 20 Dense`: `Input((64,))`, 19 x `Dense(64, "sigmoid")`, `Dense(1)`,
  MSE, normal inputs and targets;
- `small CNN`: `Input((32, 32, 3))`, `Conv2D(16, 3)`, max-pool,
  `Conv2D(32, 3)`, max-pool, `Flatten`, `Dense(10)`, sparse categorical
  cross-entropy from logits, uniform images, random labels.

Per model, warm-up first (one `train_on_batch`, one short `fit`, two
`diagnose` calls: the first traces and compiles, timed apart as "first
diagnose"; the second is not counted), then `--rounds` rounds, each timing,
in an order rotated each round:

- one `diagnose(model, x, y)` on the batch (the second call onward reuses
  the trace kept on the model);
- one `fit` epoch of `--fit-steps` steps over the same batch repeated, with
  a callback that waits for each step (reads the loss back, as the progress
  bar does) and notes the time: the step time is the time from the end of
  the first step to the end of the last over the steps between, so the
  epoch's setup is left out;
- one `train_on_batch(x, y)` (a single call, its setup included, as
  `diagnose` is).

The table gives medians (and minima) over the rounds, the time inside
the passes (from `TimeProbe.start` to their results on the host, the
data checks that run meanwhile included), the ratio of
the median `diagnose` to the median `fit` step (the claim's measure), the
paired ratio (median over the rounds of that round's ratio), the ratio of
the minima (the less disturbed figure on a shared machine) and the ratio to
`train_on_batch`; the bound is 3 + number of recurrent layers. With
`--profile N`, each model's passes are then timed apart (`TimeProbe`s with
the weights only, the first sequence, all sequences, ...; N interleaved
rounds) and 3 warm calls run under cProfile.

Part 2, GradientBoard's overhead (`--part overhead`), the setting of
`benchmarks/gradboard_overhead.py` (2 x LSTM(64) -> Dense(1), T = 50, batch
32, 20 steps per epoch, MSE, Adam, `jit_compile="auto"`): plain `fit`, Keras
`TensorBoard(histogram_freq=1)`, `GradientBoard(histogram_freq=1,
write_plots=False, diagnose=False)`, the same with `diagnose=True` (the
checks, their Text summary `diagnosis`) and with `diagnose=True,
probe=(x[:32], y[:32])` (the checks with their forward pass over the probe
batch: dead and saturated units, non-finite outputs, the data's scale, the
output against the loss), each its own model, one untimed
warm-up `fit`, then round-robin (order rotated each round) one long `fit`
(`--epochs` epochs in one call) and `--calls` one-epoch `fit` calls. Ratio =
minimum over the rounds / the plain fit's minimum, as in
`gradboard_overhead.py`, whose target is GradientBoard's ratio no more than
Keras TensorBoard's. Inside the same fits, the board's `on_epoch_end` is timed
per epoch, and with the checks its `_check` (the diagnosis and its Text
summary, the forward pass included) and `_epoch_logs` (the keys added to
Keras's logs). Each callback's own work is also timed, as a total per epoch:
its methods (those it overrides), and on PyTorch the board's hook in every
step: the optimizer's `apply` timed from outside the hook minus from inside
it (`_callback_cost.ApplyClock`; on TensorFlow and JAX the recording runs
inside the traced step and is not timed apart). Those totals are less noisy
than the wall-time ratios, whose differences here are a few percent.

Then each callback's whole cost, on every backend (`_callback_cost.py`):
its methods as above, plus its cost inside the steps, where GradientBoard's
recording runs on TensorFlow and JAX. Each configuration's model is fitted
with its callbacks and without any, interleaved (`--step-rounds` rounds of
2-epoch fits), each step timed from the last callback's
`on_train_batch_begin` to the first one's `on_train_batch_end`; the cost is
the mean step with minus the mean step without on the same model (two
instances of the same model differ by a few percent here, which the
wall-time ratios above cannot tell from a callback's cost), with a 95%
bootstrap interval. The plain fit's row (no callbacks either way) shows the
noise. Target: GradientBoard's whole cost no more than Keras TensorBoard's.

    python benchmarks/diagnose_cost.py --backend all                # part 2 (--part overhead) alone: ~10 min for the three
    python benchmarks/diagnose_cost.py --backend all --quick        # small sizes, a check that it runs
    python benchmarks/diagnose_cost.py --backend torch --part cost --profile   # where diagnose's time goes
    python benchmarks/diagnose_cost.py --backend jax --part cost --timesteps 500
"""

import collections
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import traceback
import warnings

import _callback_cost
import _per_backend

MODELS = ("LSTM(32)", "2 x LSTM(32)", "MLP, 20 Dense", "small CNN")
PLAIN = "plain fit"
TENSORBOARD = "keras TensorBoard"
BOARD_OFF = "GradientBoard, diagnose=False"
BOARD_ON = "GradientBoard, diagnose=True"
BOARD_PROBE = "GradientBoard, diagnose=True, probe"
BOARDS = (BOARD_OFF, BOARD_ON, BOARD_PROBE)
PROBE_ROWS = 32
MODES = {"long": "one long fit", "repeated": "repeated 1-epoch fits"}


def parse_args(argv=None):
    parser = _per_backend.parser(__doc__)
    parser.add_argument("--part", choices=("cost", "overhead", "all"), default="all")
    parser.add_argument(
        "--timesteps",
        type=int,
        nargs="+",
        default=[200],
        help="T of the adding problem (the LSTM models), one table row per value",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds of part 1")
    parser.add_argument(
        "--fit-steps", type=int, default=8, help="steps of each timed fit epoch in part 1"
    )
    parser.add_argument("--overhead-rounds", type=int, default=7, help="rounds of part 2")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch in part 2")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of part 2's long fit")
    parser.add_argument("--calls", type=int, default=3, help="one-epoch fits of part 2")
    parser.add_argument(
        "--step-rounds",
        type=int,
        default=8,
        help="rounds of part 2's step times (each: two 2-epoch fits per configuration, with and without its callbacks)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=7,
        default=0,
        help="after part 1, per model: its passes timed apart over this many rounds (default 7), then cProfile",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (T=50, 3 rounds, 4-step fits; part 2: 2 rounds of 2 epochs/calls of 5 steps)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.timesteps, args.rounds, args.fit_steps = [50], 3, 4
        args.overhead_rounds, args.steps, args.epochs, args.calls = 2, 5, 2, 2
        args.step_rounds = 2
    return args


def main(argv=None):
    args = parse_args(argv)
    if _per_backend.dispatch(args.backend, __file__, argv):
        return
    global keras, np, gk
    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_gradkit as gk

    # A finding is warned once per (kind, where): not part of what is timed.
    warnings.simplefilter("ignore", gk.diagnostics.GradientWarning)
    header(args)
    ok = True
    if args.part in ("cost", "all"):
        ok &= guarded("part 1 (diagnose)", lambda: Cost(args).run())
    if args.part in ("overhead", "all"):
        ok &= guarded("part 2 (GradientBoard)", lambda: Overhead(args).run())
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not ok:
        sys.exit(1)


def guarded(what, fn):
    try:
        fn()
        return True
    except Exception:  # keep the other part; say what failed
        print(f"\n{what} FAILED:", flush=True)
        traceback.print_exc(file=sys.stdout)
        return False


def header(args):
    backend = keras.backend.backend()
    module = __import__(backend)
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; backend {backend} {module.__version__}, keras "
        f"{keras.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPU cores; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" + ("; QUICK sizes" if args.quick else ""),
        flush=True,
    )


def timed(fn):
    """(wall s, process CPU s) of `fn()`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def med(values):
    return statistics.median(values)


# ---------------------------------------------------------------- part 1
def adding_problem(rng, n, timesteps):
    """Uniform values with two marked steps, one in each half; target: their sum."""
    x = np.zeros((n, timesteps, 2), "float32")
    x[..., 0] = rng.uniform(size=(n, timesteps))
    half = max(timesteps // 2, 1)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, timesteps, size=n) if timesteps > 1 else first
    rows = np.arange(n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None].astype("float32")
    return x, y


def build(name, timesteps, batch_size):
    """(model, x, y) of one batch, the model compiled."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    layers = keras.layers
    loss = "mse"
    if name == "LSTM(32)":
        x, y = adding_problem(rng, batch_size, timesteps)
        stack = [keras.Input((timesteps, 2)), layers.LSTM(32), layers.Dense(1)]
    elif name == "2 x LSTM(32)":
        x, y = adding_problem(rng, batch_size, timesteps)
        stack = [
            keras.Input((timesteps, 2)),
            layers.LSTM(32, return_sequences=True),
            layers.LSTM(32),
            layers.Dense(1),
        ]
    elif name == "MLP, 20 Dense":
        x = rng.normal(size=(batch_size, 64)).astype("float32")
        y = rng.normal(size=(batch_size, 1)).astype("float32")
        stack = [keras.Input((64,))]
        stack += [layers.Dense(64, "sigmoid") for _ in range(19)] + [layers.Dense(1)]
    elif name == "small CNN":
        x = rng.uniform(size=(batch_size, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, size=(batch_size,)).astype("int32")
        stack = [
            keras.Input((32, 32, 3)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        raise ValueError(name)
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model, x, y


def recurrent_count(model):
    """Top-level recurrent layers, as `diagnose` probes them."""
    kinds = (keras.layers.RNN, keras.layers.Bidirectional)
    return sum(isinstance(layer, kinds) for layer in model.layers)


class Cost:
    def __init__(self, args):
        self.args = args

        class StepTimes(keras.callbacks.Callback):
            """The end time of each step, each step waited for (its loss read back)."""

            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                float(np.asarray(logs["loss"]))
                self.ends.append(time.perf_counter())

        self.StepTimes = StepTimes
        self.probe_times = []
        self._wrap_probe()

    def _wrap_probe(self):
        """Times the traced passes inside each diagnose, from
        `TimeProbe.start` until the function it returns has their results
        on the host (`diagnose` checks the data meanwhile); skipped if the
        names change."""
        try:
            from keras_gradkit.diagnostics import time_probe
        except ImportError:
            return
        original = getattr(time_probe.TimeProbe, "start", None)
        if original is None:
            return
        times = self.probe_times

        def start(probe, *a, **k):
            began = time.perf_counter()
            finish = original(probe, *a, **k)

            def timed_finish():
                try:
                    return finish()
                finally:
                    times.append(time.perf_counter() - began)

            return timed_finish

        time_probe.TimeProbe.start = start

    def cases(self):
        for name in self.args.models:
            if "LSTM" in name:
                for t in self.args.timesteps:
                    yield name, t
            else:
                yield name, None

    def run(self):
        a = self.args
        print(
            f"\nPart 1: warm diagnose vs one training step, batch {a.batch_size}; {a.rounds} interleaved "
            f"rounds of (one diagnose, one {a.fit_steps}-step fit epoch, one train_on_batch), order "
            "rotated each round",
            flush=True,
        )
        rows = []
        for name, t in self.cases():
            rows.append(self.measure(name, t))
            self.print_rows(rows[-1:], header=len(rows) == 1)
        print("\nPart 1 table (medians over the rounds; min in parentheses):")
        self.print_rows(rows, header=True)
        print("\nbound: diagnose / fit step (median) <= 3 + recurrent layers")
        for r in rows:
            verdict = "met" if r["ratio"] <= r["bound"] else "NOT met"
            print(
                f"  {r['label']}: {r['ratio']:.2f} (paired {r['paired']:.2f}, min/min {r['ratio_min']:.2f}) "
                f"<= {r['bound']}: {verdict}"
            )
        if a.profile:
            for name, t in self.cases():
                self.profile(name, t)

    def measure(self, name, timesteps):
        a = self.args
        model, x, y = build(name, timesteps or 0, a.batch_size)
        label = name + (f", T={timesteps}" if timesteps else "")
        k = a.fit_steps
        xs, ys = np.concatenate([x] * k), np.concatenate([y] * k)
        timer = self.StepTimes()

        def fit():
            timer.ends = []
            model.fit(
                xs,
                ys,
                batch_size=a.batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[timer],
            )
            return (timer.ends[-1] - timer.ends[0]) / (len(timer.ends) - 1)

        report = [None]

        def diagnose():
            report[0] = gk.diagnose(model, x, y)

        tob_first, _ = timed(lambda: model.train_on_batch(x, y))
        fit_first, _ = timed(fit)
        del self.probe_times[:]
        diag_first, _ = timed(diagnose)
        diag_second, _ = timed(diagnose)  # the first warm call, not in the medians
        times = collections.defaultdict(list)
        probe = []
        ops = {
            "diagnose": lambda: timed(diagnose)[0],
            "fit step": fit,
            "train_on_batch": lambda: timed(lambda: model.train_on_batch(x, y))[0],
        }
        names = list(ops)
        for r in range(a.rounds):
            for op in names[r % 3 :] + names[: r % 3]:
                del self.probe_times[:]
                times[op].append(ops[op]() * 1e3)
                if op == "diagnose" and self.probe_times:
                    probe.append(sum(self.probe_times) * 1e3)
        measures = report[0].measures
        passes = 1 + len(measures.get("time", {}))
        n_rec = recurrent_count(model)
        d, s, b = times["diagnose"], times["fit step"], times["train_on_batch"]
        return {
            "label": label,
            "recurrent": n_rec,
            "passes": passes,
            "bound": 3 + n_rec,
            "fit": s,
            "tob": b,
            "diag": d,
            "probe": probe,
            "first": diag_first * 1e3,
            "second": diag_second * 1e3,
            "warmup": (tob_first + fit_first) * 1e3,
            "ratio": med(d) / med(s),
            "ratio_min": min(d) / min(s),
            "paired": med(x / y for x, y in zip(d, s)),
            "ratio_tob": med(d) / med(b),
            "findings": ", ".join(f"{f.kind}@{f.where}" for f in report[0].findings) or "none",
        }

    def print_rows(self, rows, header):
        if header:
            print(
                "| model | recurrent layers | passes | fit step ms | train_on_batch ms | diagnose ms | "
                "in TimeProbe ms | first diagnose s | diagnose / fit step | paired | min/min | "
                "diagnose / train_on_batch | bound | findings |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            probe = f"{med(r['probe']):.1f}" if r["probe"] else "-"
            verdict = "met" if r["ratio"] <= r["bound"] else "**NOT met**"
            print(
                f"| {r['label']} | {r['recurrent']} | {r['passes']} | {med(r['fit']):.1f} ({min(r['fit']):.1f}) | "
                f"{med(r['tob']):.1f} ({min(r['tob']):.1f}) | {med(r['diag']):.1f} ({min(r['diag']):.1f}) | "
                f"{probe} | {r['first'] / 1e3:.2f} | **{r['ratio']:.2f}x** | {r['paired']:.2f}x | "
                f"{r['ratio_min']:.2f}x | "
                f"{r['ratio_tob']:.2f}x | {r['bound']} ({verdict}) | {r['findings']} |",
                flush=True,
            )

    def profile(self, name, timesteps):
        """Where a warm diagnose's time goes: its passes timed apart
        (interleaved, medians), then cProfile."""
        model, x, y = build(name, timesteps or 0, self.args.batch_size)
        label = name + (f", T={timesteps}" if timesteps else "")
        n = self.args.profile
        ops = {
            "train_on_batch": lambda: model.train_on_batch(x, y),
            "diagnose": lambda: gk.diagnose(model, x, y),
        }
        try:  # a private method: the breakdown is skipped if it changes
            from keras_gradkit.diagnostics import time_probe

            time_ok = recurrent_count(model) > 0
            weights = time_probe.TimeProbe(model, x, y, time=False, variables=True, argument="x")
            ops["probe: weights pass"] = weights.compute_all
            if time_ok:

                class FirstSequence(time_probe.TimeProbe):
                    """The model input only (for these models, also the first
                    recurrent layer's input)."""

                    def _build_targets(self):
                        return super()._build_targets()[:1]

                probes = {
                    "probe: first sequence pass": FirstSequence(model, x, y, variables=False),
                    "probe: sequence passes": time_probe.TimeProbe(model, x, y, variables=False),
                    "probe: weights + first sequence": FirstSequence(model, x, y, variables=True),
                    "probe: all passes (diagnose's)": time_probe.TimeProbe(
                        model, x, y, variables=True
                    ),
                }
                for key, probe in probes.items():
                    ops[key] = probe.compute_all
        except Exception as e:  # noqa: BLE001  (report and go on)
            print(f"\nbreakdown of {label}: probe variants skipped ({type(e).__name__}: {e})")
        for fn in ops.values():  # trace, compile, warm up
            fn()
            fn()
        times = collections.defaultdict(list)
        names = list(ops)
        for r in range(n):
            for op in names[r % len(names) :] + names[: r % len(names)]:
                times[op].append(timed(ops[op])[0] * 1e3)
        base = med(times["train_on_batch"])
        print(f"\nbreakdown of a warm diagnose, {label}: medians (min) over {n} interleaved rounds")
        for op in names:
            print(
                f"  {op}: {med(times[op]):.1f} ms ({min(times[op]):.1f}), "
                f"{med(times[op]) / base:.2f}x train_on_batch"
            )
        profiler = cProfile.Profile()
        calls = 3
        start = time.perf_counter()
        profiler.enable()
        for _ in range(calls):
            gk.diagnose(model, x, y)
        profiler.disable()
        took = (time.perf_counter() - start) / calls * 1e3
        for key, restriction, count in (("cumulative", "keras_gradkit", 12), ("tottime", None, 12)):
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(key).print_stats(*(r for r in (restriction, count) if r is not None))
            text = out.getvalue()
            text = text[text.find("   ncalls") :].rstrip()
            where = f" in {restriction}" if restriction else ""
            print(
                f"cProfile of {calls} warm diagnose calls ({took:.1f} ms a call under the profiler), "
                f"top {count}{where} by {key}:\n{text}"
            )


# ---------------------------------------------------------------- part 2
class Overhead:
    def __init__(self, args):
        self.args = args
        a = args
        rng = np.random.default_rng(0)
        n = a.batch_size * a.steps
        self.timesteps = 50 if not a.quick else 6
        self.units = 64 if not a.quick else 4
        self.x = rng.uniform(size=(n, self.timesteps, 2)).astype("float32")
        self.y = rng.uniform(size=(n, 1)).astype("float32")
        self.traces = collections.Counter()
        original = keras.Sequential.train_step

        def train_step(model, *args, **kwargs):
            self.traces[id(model)] += 1
            return original(model, *args, **kwargs)

        keras.Sequential.train_step = train_step
        # Per configuration, key -> [ms]: the board's own calls inside fit.
        self.inner = collections.defaultdict(lambda: collections.defaultdict(list))
        self.failures = collections.Counter()
        # Per configuration, ms in total inside the timed fits: the callbacks'
        # own methods, and (PyTorch) the monitor's work in the steps; epochs.
        self.methods = _callback_cost.MethodClock()
        self.applies = _callback_cost.ApplyClock()
        self.timed_with = {}  # configuration -> the callbacks of its timed fits
        self.epochs = collections.Counter()

    def build(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((self.timesteps, 2)),
                keras.layers.LSTM(self.units, return_sequences=True),
                keras.layers.LSTM(self.units),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        return model

    def wrap(self, config, obj, attribute):
        original = getattr(obj, attribute)
        times = self.inner[config][attribute]

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            except Exception:
                self.failures[config, attribute] += 1  # the board reports it and goes on
                raise
            finally:
                times.append((time.perf_counter() - start) * 1e3)

        setattr(obj, attribute, wrapper)

    def time_own(self, config, model, callbacks):
        """Times each callback's own methods (those it overrides), and on
        PyTorch the optimizer's `apply` in each step from outside the board's
        hook and from inside it (the hook's work is eager there; traced
        inside the step elsewhere). Returns the clock's callback, to add
        to the timed fits only, or None."""
        self.methods.attach(config, callbacks)
        if keras.backend.backend() != "torch":
            return None
        self.applies.instrument(model.optimizer)
        return self.applies.callback(config, model.optimizer)

    def callbacks(self, config, log_root):
        d = os.path.join(log_root, config.replace(" ", "_").replace(",", "").replace("=", "_"))
        if config == PLAIN:
            return []
        if config == TENSORBOARD:
            return [keras.callbacks.TensorBoard(d, histogram_freq=1)]
        probe = (self.x[:PROBE_ROWS], self.y[:PROBE_ROWS]) if config == BOARD_PROBE else None
        board = gk.callbacks.GradientBoard(
            d, histogram_freq=1, write_plots=False, diagnose=config != BOARD_OFF, probe=probe
        )
        self.wrap(config, board, "on_epoch_end")
        # Private names (update them if they change): the checks and the logs.
        for attribute in ("_check", "_epoch_logs"):
            if hasattr(board, attribute):
                self.wrap(config, board, attribute)
        return [board]

    def fit(self, model, callbacks, epochs):
        model.fit(
            self.x,
            self.y,
            batch_size=self.args.batch_size,
            epochs=epochs,
            verbose=0,
            callbacks=callbacks,
        )

    def run(self):
        a = self.args
        print(
            f"\nPart 2: GradientBoard's overhead in fit; 2 x LSTM({self.units}) -> Dense(1), T={self.timesteps}, "
            f"batch {a.batch_size}, {a.steps} steps per epoch, jit_compile=auto; long fit = {a.epochs} epochs "
            f"in one call, repeated = {a.calls} one-epoch calls; {a.overhead_rounds} interleaved rounds",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as log_root:
            self._run(log_root)

    def _run(self, log_root):
        a = self.args
        runs = {}
        for config in (PLAIN, TENSORBOARD, *BOARDS):
            model = self.build()
            callbacks = self.callbacks(config, log_root)
            clock = self.time_own(config, model, callbacks)
            timed_with = callbacks if clock is None else [*callbacks, clock]
            first, _ = timed(lambda: self.fit(model, timed_with, 1))  # noqa: B023  (called at once)
            runs[config] = (model, callbacks, first)
            # The timed fits' callbacks: the step times below fit without the clock.
            self.timed_with[config] = timed_with
        for per_key in self.inner.values():  # the warm-up's calls are not counted
            for values in per_key.values():
                del values[:]
        self.methods.ms.clear()
        self.applies.clear()
        names = list(runs)
        wall = collections.defaultdict(list)
        cpu = collections.defaultdict(list)
        traces_before = {n: self.traces[id(m)] for n, (m, _, _) in runs.items()}
        started = time.perf_counter()
        for r in range(a.overhead_rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for mode in list(MODES) if r % 2 == 0 else list(MODES)[::-1]:
                for config in order:
                    model, callbacks = runs[config][0], self.timed_with[config]
                    if mode == "long":
                        w, c = timed(lambda: self.fit(model, callbacks, a.epochs))  # noqa: B023
                        steps = a.epochs * a.steps
                    else:
                        w, c = timed(
                            lambda: [self.fit(model, callbacks, 1) for _ in range(a.calls)]  # noqa: B023
                        )
                        steps = a.calls * a.steps
                    wall[mode, config].append(w / steps * 1e3)
                    cpu[mode, config].append(c / steps * 1e3)
                    self.epochs[config] += steps // a.steps
        elapsed = time.perf_counter() - started
        traces = {n: self.traces[id(m)] - traces_before[n] for n, (m, _, _) in runs.items()}
        self.report(runs, wall, cpu, elapsed, traces)
        # The hook's time on PyTorch is in `report`'s own-work lines, read
        # before the step times below (whose fits its clock times too).
        methods = {c: self.methods.ms[c] / max(self.epochs[c], 1) for c in runs}
        samples = _callback_cost.step_times(
            {c: (m, cb) for c, (m, cb, _) in runs.items()}, self.fit, a.step_rounds, a.steps
        )
        fits_per_epoch = (1 + a.calls) / (a.epochs + a.calls)
        _callback_cost.whole_cost(samples, methods, a.steps, fits_per_epoch, TENSORBOARD, BOARDS)

    def report(self, runs, wall, cpu, elapsed, traces):
        a = self.args
        print(
            f"timed rounds took {elapsed:.0f} s; first (warm-up) fit: "
            + ", ".join(f"{n} {first:.1f} s" for n, (_, _, first) in runs.items())
        )
        if keras.backend.backend() == "torch":
            print("train_step traces during the timed fits: none (PyTorch runs the step eagerly)")
        else:
            print(
                "train_step traces during the timed fits (0 = the warm-up's train function reused): "
                + ", ".join(f"{n} {t}" for n, t in traces.items())
            )
        print(
            "ms/step = minimum over the rounds; ratio = ratio of minima to the plain fit; extra = "
            "(minimum - plain minimum) x steps per epoch;\npaired = median over the rounds of (time / "
            "plain time in the same round); cpu = ratio of median process CPU times"
        )
        cols = []
        for mode in MODES:
            cols += [f"{mode} ms/step", f"{mode} ratio", f"{mode} extra ms/epoch"]
            cols += [f"{mode} paired", f"{mode} cpu"]
        print("| configuration | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        ratio = {}
        for config in runs:
            cells = []
            for mode in MODES:
                t, b = wall[mode, config], wall[mode, PLAIN]
                ratio[mode, config] = min(t) / min(b)
                paired = med(x / y for x, y in zip(t, b))
                c = med(cpu[mode, config]) / med(cpu[mode, PLAIN])
                cells += [f"{min(t):.2f}", f"{ratio[mode, config]:.3f}"]
                cells += [f"{(min(t) - min(b)) * a.steps:+.0f}", f"{paired:.3f}", f"{c:.3f}"]
            print(f"| {config} | " + " | ".join(cells) + " |")
        print(
            "\ntarget (gradboard_overhead.py): GradientBoard / plain fit <= keras TensorBoard / plain fit"
        )
        for mode, label in MODES.items():
            limit = ratio[mode, TENSORBOARD]
            checks = [
                f"{n} {ratio[mode, n]:.3f} ({'met' if ratio[mode, n] <= limit else 'NOT met'})"
                for n in BOARDS
            ]
            on_off = ratio[mode, BOARD_ON] / ratio[mode, BOARD_OFF]
            print(
                f"  {label}: keras TensorBoard {limit:.3f}; "
                + "; ".join(checks)
                + f"; diagnose=True / diagnose=False {on_off:.3f}"
            )
        print("\nthe board's own calls inside the timed fits, ms per epoch (median / min, count):")
        for config in BOARDS:
            for key, values in self.inner[config].items():
                if values:
                    print(
                        f"  {config}: {key} {med(values):.2f} / {min(values):.2f} ({len(values)})"
                    )
        for (config, key), count in self.failures.items():
            print(f"  FAILED: {config}: {key} raised {count} time(s); its times are not valid")
        self.report_own()
        off = self.inner[BOARD_OFF]["on_epoch_end"]
        step = min(wall["long", PLAIN])
        for config in (BOARD_ON, BOARD_PROBE):
            on = self.inner[config]["on_epoch_end"]
            if off and on:
                per_epoch = med(on) - med(off)
                print(
                    f"  on_epoch_end, {config.split(', ', 1)[1]} minus diagnose=False: "
                    f"{per_epoch:+.2f} ms per epoch = {per_epoch / (step * a.steps) * 100:+.2f}% of a "
                    f"{a.steps}-step epoch of the plain fit ({step:.2f} ms/step)"
                )
        sys.stdout.flush()

    def report_own(self):
        torch = keras.backend.backend() == "torch"
        print(
            "\neach callback's own time inside the timed fits, ms per epoch (the total over all the "
            "timed fits / their epochs): its callback methods"
            + (
                ", plus the board's hook in the steps (the optimizer's `apply` timed from outside "
                "the hook minus from inside it, every step; eager; the clock's own reading, a few "
                "microseconds a step, is in every row)"
                if torch
                else "; the monitor's work runs inside the traced step and is not in these figures"
            )
        )
        epochs = {c: max(self.epochs[c], 1) for c in (PLAIN, TENSORBOARD, *BOARDS)}
        steps_per_epoch = self.args.steps
        if torch:
            print(
                "  the optimizer's apply per step, outside / inside the hook / difference (ms): "
                + "; ".join(
                    f"{c} {o:.3f} / {i:.3f} / {d:+.3f}"
                    for c in epochs
                    if (per := self.applies.per_step(c)) is not None
                    for o, i, d in [per]
                )
            )
        hook = {
            c: (self.applies.per_step(c) or (0.0, 0.0, 0.0))[2] * steps_per_epoch if torch else 0.0
            for c in epochs
        }
        keras_own = self.methods.ms[TENSORBOARD] / epochs[TENSORBOARD] + hook[TENSORBOARD]
        print(
            f"  {TENSORBOARD}: {keras_own:.1f} (methods"
            + (f", and its steps' reading of the clock {hook[TENSORBOARD]:+.1f}" if torch else "")
            + ")"
        )
        for config in BOARDS:
            methods = self.methods.ms[config] / epochs[config]
            total = methods + hook[config]
            verdict = ""
            if torch:
                verdict = f"; {'met' if total <= keras_own else 'NOT met'} (<= {keras_own:.1f})"
            print(
                f"  {config}: {total:.1f} = methods {methods:.1f} + hook {hook[config]:.1f}"
                f" ({total / keras_own:.2f}x Keras's){verdict}"
            )


if __name__ == "__main__":
    main()
