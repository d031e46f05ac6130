"""Training time with `GradientBoard(histogram_freq=1)` against plain `fit`, in one run.

Five configurations, each its own model (2 x LSTM(64) -> Dense(1), T = 50,
batch 32, MSE, seed 0), built and compiled once; `fit` is called on the same
model again and again, so a train function that is traced again on each call
shows in the times:

- `Adam, plain fit`: Adam, no callback (the baseline of the next two);
- `Adam + keras TensorBoard`: Keras's own `TensorBoard(log_dir, histogram_freq=1)`;
- `Adam + GradientBoard`: `GradientBoard(log_dir, histogram_freq=1, write_plots=False)`;
- `ClippedOptimizer, plain fit`: `ClippedOptimizer(Adam, ClipByGlobalNorm(1.0))`
  compiled by the user, no callback (the baseline of the next one);
- `ClippedOptimizer + GradientBoard`: the same with GradientBoard as above.

Each is timed in two ways: one long `fit` (`--epochs` epochs in one call) and
repeated one-epoch `fit` calls (`--calls` calls), each epoch `--steps` steps.
After one untimed warm-up `fit` per model, the timed runs go round-robin over
the configurations (the order rotated each round), `--rounds` rounds. The
table gives, per step, the minimum over the rounds and the ratio of minima to
the configuration's plain `fit` (the headline number), the extra time per
epoch this makes (a callback's cost is mostly per epoch: the ratio grows as
epochs get shorter), the median of the per-round ratios (each round's time over the baseline's in the same round)
and the ratio of median CPU times (process CPU time, less sensitive to other
load on the machine). Target: GradientBoard's ratio no more than Keras
`TensorBoard(histogram_freq=1)`'s in the same run.

Each callback's model is also timed without it (`callbacks=[]`) in every
round, right next to its own fits (the order of the pair alternated): a
second table gives each callback's ratio to its own model's plain fit. Two
instances of the same model differ by a few percent in step time on this
machine, which the first table's ratios (each model against the plain
configuration's model) cannot tell from a callback's cost.

Then each callback's whole cost per epoch, measured apart from the rest of
`fit` (`_callback_cost.py`): its methods, timed inside the fits above, plus
its cost inside the steps (GradientBoard's recording is traced into the
step on TensorFlow and JAX): the mean step of the configuration's model
with its callbacks minus without any, interleaved 2-epoch fits
(`--step-rounds` rounds), with a 95% bootstrap interval. The same model
with and without: two instances of the same model differ by a few percent
in step time on this machine, which the ratio of minima above cannot tell
from a callback's cost. Target there: GradientBoard's whole cost no more
than Keras TensorBoard's.

Then, apart (they are not in the tables above): the time probe
(`time_probe=(x[:8], y[:8])`) and the pictures (`write_plots=True`), timed
inside `fit` on an Adam model: the probe's gradient (`compute`), one probe
write (gradient, tensors and scalars, no picture) and the pictures of one
histogram epoch (depth and time-gradient images: writes with pictures minus
writes without). Medians over `--rounds` x `--epochs` epochs.

    python benchmarks/gradboard_overhead.py                     # current KERAS_BACKEND (default tensorflow)
    python benchmarks/gradboard_overhead.py --backend all       # one process per backend, in turn
    python benchmarks/gradboard_overhead.py --backend jax --rounds 5
    python benchmarks/gradboard_overhead.py --backend all --smoke   # tiny sizes: a quick check that it runs
"""

import collections
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import _callback_cost
import _per_backend

ADAM = "Adam, plain fit"
CLIPPED = "ClippedOptimizer, plain fit"
TENSORBOARD = "Adam + keras TensorBoard"
BOARD = "Adam + GradientBoard"
CLIPPED_BOARD = "ClippedOptimizer + GradientBoard"
BASELINE = {ADAM: ADAM, TENSORBOARD: ADAM, BOARD: ADAM, CLIPPED: CLIPPED, CLIPPED_BOARD: CLIPPED}
MODES = {"long": "one long fit", "repeated": "repeated 1-epoch fits"}


def parse_args(argv=None):
    parser = _per_backend.parser(__doc__)
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the long fit")
    parser.add_argument(
        "--calls", type=int, default=5, help="one-epoch fit calls of the repeated fit"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds over the configurations"
    )
    parser.add_argument(
        "--step-rounds",
        type=int,
        default=8,
        help="rounds of the whole-cost measure (each: two 2-epoch fits per configuration)",
    )
    parser.add_argument("--probe-batch", type=int, default=8, help="examples in the time probe")
    parser.add_argument(
        "--jit-compile",
        choices=["auto", "true", "false"],
        default="auto",
        help='compile(jit_compile=...); "auto" (Keras\'s default): XLA on JAX, not on CPU TensorFlow nor PyTorch',
    )
    parser.add_argument(
        "--logdir", default=None, help="where the callbacks write (default: a temporary folder)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (T=6, 4 units, 2 steps, 2 epochs/calls, 1 round): checks that it runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.timesteps, args.units, args.batch_size, args.steps = 6, 4, 4, 2
        args.epochs, args.calls, args.rounds, args.probe_batch = 2, 2, 1, 2
        args.step_rounds = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if _per_backend.dispatch(args.backend, __file__, argv):
        return
    with contextlib.ExitStack() as stack:
        log_root = args.logdir or stack.enter_context(tempfile.TemporaryDirectory())
        ok = Benchmark(args, log_root).run()
    if not ok:
        sys.exit(1)


class Benchmark:
    def __init__(self, args, log_root):
        global keras, np, gk
        import keras
        import numpy as np

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import keras_gradkit as gk

        self.args = args
        self.log_root = log_root
        rng = np.random.default_rng(0)
        n = args.batch_size * args.steps
        self.x = rng.uniform(size=(n, args.timesteps, 2)).astype("float32")
        self.y = rng.uniform(size=(n, 1)).astype("float32")
        # Counts the Python runs of `train_step` per model: on TensorFlow and JAX one per trace of the train
        # function (PyTorch runs it eagerly, once per step).
        self.traces = collections.Counter()
        original = keras.Sequential.train_step

        def train_step(model, *args, **kwargs):
            self.traces[id(model)] += 1
            return original(model, *args, **kwargs)

        keras.Sequential.train_step = train_step
        self.methods = _callback_cost.MethodClock()  # the callbacks' own methods, per configuration
        # PyTorch: the optimizer's apply in each step, outside and inside the board's hook.
        self.applies = _callback_cost.ApplyClock() if keras.backend.backend() == "torch" else None
        self.epochs = collections.Counter()  # epochs timed per configuration

    # ------------------------------------------------------------ models
    def build(self, optimizer):
        a = self.args
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((a.timesteps, 2)),
                keras.layers.LSTM(a.units, return_sequences=True),
                keras.layers.LSTM(a.units),
                keras.layers.Dense(1),
            ]
        )
        jit = {"auto": "auto", "true": True, "false": False}[a.jit_compile]
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
        return model

    @staticmethod
    def adam():
        return keras.optimizers.Adam(1e-3)

    @staticmethod
    def clipped():
        return gk.optimizers.ClippedOptimizer(
            keras.optimizers.Adam(1e-3), gk.clipping.ClipByGlobalNorm(1.0)
        )

    def configs(self):
        d = lambda name: os.path.join(self.log_root, name)
        board = lambda name: gk.callbacks.GradientBoard(
            d(name), histogram_freq=1, write_plots=False
        )
        return {
            ADAM: (self.adam, lambda: []),
            TENSORBOARD: (
                self.adam,
                lambda: [keras.callbacks.TensorBoard(d("tensorboard"), histogram_freq=1)],
            ),
            BOARD: (self.adam, lambda: [board("gradientboard")]),
            CLIPPED: (self.clipped, lambda: []),
            CLIPPED_BOARD: (self.clipped, lambda: [board("gradientboard_clipped")]),
        }

    def fit(self, model, callbacks, epochs):
        model.fit(
            self.x,
            self.y,
            batch_size=self.args.batch_size,
            epochs=epochs,
            verbose=0,
            callbacks=callbacks,
        )

    def timed(self, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu

    # ------------------------------------------------------------ run
    def run(self):
        a = self.args
        self.header()
        runs = {}
        for name, (make_optimizer, make_callbacks) in self.configs().items():
            model = self.build(make_optimizer())
            callbacks = make_callbacks()
            self.methods.attach(name, callbacks)
            if self.applies is not None:
                self.applies.instrument(model.optimizer)
            first, _ = self.timed(lambda: self.fit(model, callbacks, 1))  # trace, compile, warm up  # noqa: B023  (called at once, in this iteration)
            runs[name] = (model, callbacks, first)
        # Each callback's model is also timed without it, next to its fits:
        # the same model's plain fit, a baseline free of the differences
        # between two instances of the same model.
        for model, callbacks, _ in runs.values():
            if callbacks:
                self.fit(model, [], 1)  # its plain train function made, untimed
        self.methods.ms.clear()  # the warm-up's calls are not counted
        if self.applies is not None:
            self.applies.clear()
        names = list(runs)
        keys = [(n, True) for n in names] + [(n, False) for n in names if runs[n][1]]
        wall = {(m, k): [] for m in MODES for k in keys}
        cpu = {(m, k): [] for m in MODES for k in keys}
        traces_before = {name: self.traces[id(model)] for name, (model, _, _) in runs.items()}
        started = time.perf_counter()
        for r in range(a.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            modes = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
            for mode in modes:
                for name in order:
                    model, callbacks, _ = runs[name]
                    pair = [True, False] if callbacks else [True]
                    for with_callbacks in pair if r % 2 == 0 else pair[::-1]:
                        used = callbacks if with_callbacks else []
                        if self.applies is not None:
                            clock = self.applies.callback((name, with_callbacks), model.optimizer)
                            used = [*used, clock]
                        if mode == "long":
                            w, c = self.timed(lambda: self.fit(model, used, a.epochs))  # noqa: B023  (called at once, in this iteration)
                            steps = a.epochs * a.steps
                        else:

                            def repeated(model=model, used=used):
                                return [self.fit(model, used, 1) for _ in range(a.calls)]

                            w, c = self.timed(repeated)
                            steps = a.calls * a.steps
                        wall[mode, (name, with_callbacks)].append(w / steps * 1e3)
                        cpu[mode, (name, with_callbacks)].append(c / steps * 1e3)
                        if with_callbacks:
                            self.epochs[name] += steps // a.steps
        elapsed = time.perf_counter() - started
        traces = {
            name: self.traces[id(model)] - traces_before[name]
            for name, (model, _, _) in runs.items()
        }
        self.report(runs, wall, cpu, elapsed, traces)
        methods = {n: self.methods.ms[n] / max(self.epochs[n], 1) for n in runs}
        if self.applies is not None:
            self.report_own(methods)
        samples = _callback_cost.step_times(
            {n: (m, cb) for n, (m, cb, _) in runs.items()}, self.fit, a.step_rounds, a.steps
        )
        fits_per_epoch = (1 + a.calls) / (a.epochs + a.calls)
        _callback_cost.whole_cost(
            samples, methods, a.steps, fits_per_epoch, TENSORBOARD, (BOARD, CLIPPED_BOARD)
        )
        ok = True
        try:
            self.probe_and_pictures()
        except Exception:  # keep the table above; say what failed
            ok = False
            print("\nthe time-probe and pictures part FAILED:", flush=True)
            traceback.print_exc(file=sys.stdout)
        load = os.getloadavg()
        print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return ok

    def header(self):
        a = self.args
        backend = keras.backend.backend()
        module = __import__(backend)
        load = os.getloadavg()
        print(
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}; backend {backend} {module.__version__}, keras {keras.__version__}, "
            f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}, "
            f"{os.cpu_count()} CPU cores; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(
            f"2 x LSTM({a.units}) -> Dense(1), T={a.timesteps}, batch {a.batch_size}, {a.steps} steps per epoch, "
            f"jit_compile={a.jit_compile}; long fit = {a.epochs} epochs in one call, repeated fit = {a.calls} one-epoch "
            f"calls; {a.rounds} interleaved rounds" + ("; SMOKE sizes" if a.smoke else ""),
            flush=True,
        )

    def report(self, runs, wall, cpu, elapsed, traces):
        a = self.args
        model = next(iter(runs.values()))[0]
        print(
            f"\njit_compile resolved to {model.jit_compile}; timed rounds took {elapsed:.0f} s; first (warm-up) fit: "
            + ", ".join(f"{n} {first:.1f} s" for n, (_, _, first) in runs.items())
        )
        if keras.backend.backend() == "torch":
            print("train_step traces during the timed fits: none (PyTorch runs the step eagerly)")
        else:
            print(
                "train_step traces during the timed fits (0 = the train function of the warm-up fit was reused): "
                + ", ".join(f"{n} {t}" for n, t in traces.items())
            )
        print(
            "ms/step = wall time per training step, minimum over the rounds; ratio = ratio of the minima to the "
            "configuration's plain fit;\nms/epoch extra = (minimum - baseline's minimum) x steps per epoch (one fit "
            "call of the repeated fit);\npaired = median over the rounds of (time / baseline's time in the same "
            "round); cpu = ratio of the median process CPU times"
        )
        cols = []
        for mode in MODES:
            cols += [
                f"{mode} ms/step",
                f"{mode} ratio",
                f"{mode} ms/epoch extra",
                f"{mode} paired",
                f"{mode} cpu",
            ]
        print("| configuration | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        ratio = {}
        for name in runs:
            base = BASELINE[name]
            cells = []
            for mode in MODES:
                t, b = wall[mode, (name, True)], wall[mode, (base, True)]
                ratio[mode, name] = min(t) / min(b)
                paired = statistics.median(x / y for x, y in zip(t, b))
                c = statistics.median(cpu[mode, (name, True)]) / statistics.median(
                    cpu[mode, (base, True)]
                )
                extra = (min(t) - min(b)) * a.steps
                cells += [
                    f"{min(t):.2f}",
                    f"{ratio[mode, name]:.3f}",
                    f"{extra:+.0f}",
                    f"{paired:.3f}",
                    f"{c:.3f}",
                ]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print(
            "\ntarget (this run, ratio of minima): GradientBoard / its plain fit <= keras TensorBoard / plain fit"
        )
        print_target(ratio)
        self.report_same_model(runs, wall)
        sys.stdout.flush()

    def report_same_model(self, runs, wall):
        """Each callback's fits against its own model's plain fits, timed
        next to them (the differences between instances left out)."""
        a = self.args
        print(
            "\nagainst the same model without the callback (its plain fits, timed next to its fits in "
            "each round): ratio of minima / paired (median over the rounds of the round's ratio) / extra "
            "ms per epoch from the minima"
        )
        cols = [
            f"{mode} {what}" for mode in MODES for what in ("ratio", "paired", "extra ms/epoch")
        ]
        print("| configuration | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        ratio = {}
        for name, (_, callbacks, _) in runs.items():
            if not callbacks:
                continue
            cells = []
            for mode in MODES:
                t, b = wall[mode, (name, True)], wall[mode, (name, False)]
                ratio[mode, name] = min(t) / min(b)
                paired = statistics.median(x / y for x, y in zip(t, b))
                extra = (min(t) - min(b)) * a.steps
                cells += [f"{ratio[mode, name]:.3f}", f"{paired:.3f}", f"{extra:+.0f}"]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("target on this baseline: GradientBoard's ratio <= keras TensorBoard's")
        print_target(ratio)

    def report_own(self, methods):
        """PyTorch: each callback's own work, timed directly inside the timed
        fits: its methods, plus the board's work in the optimizer's `apply`."""
        a = self.args
        print(
            "\nPyTorch: each callback's own work inside the timed fits, ms per epoch: its methods "
            "(per epoch), plus its work in the optimizer's apply x steps per epoch. Adam: the apply "
            "timed from outside the board's hook minus from inside it, in every step (the clock's "
            "own reading, a few microseconds a step, included, as in Keras TensorBoard's row). "
            "ClippedOptimizer (it records in its own apply, with or without a board): its apply with "
            "the board minus without, on the same model in the same rounds (the clock's reading "
            "cancels there)."
        )
        print("the optimizer's apply per step, outside / inside any hook (ms):")
        for (name, with_callbacks), n in sorted(self.applies.steps.items(), key=str):
            outer, inner, _ = self.applies.per_step((name, with_callbacks))
            label = "with its callbacks" if with_callbacks else "without"
            print(f"  {name}, {label}: {outer:.3f} / {inner:.3f} ({n} steps)")
        own = {}
        for name in (TENSORBOARD, BOARD, CLIPPED_BOARD):
            with_ = self.applies.per_step((name, True))
            without = self.applies.per_step((name, False))
            if with_ is None or without is None:
                continue
            if name == CLIPPED_BOARD:
                in_steps = (with_[0] - without[0]) * a.steps
                how = "apply with - without"
            else:
                in_steps = with_[2] * a.steps
                how = "outside - inside the hook"
            own[name] = methods[name] + in_steps
            print(
                f"  {name}: {own[name]:.1f} = methods {methods[name]:.1f} + {in_steps:+.1f} ({how})"
            )
        if TENSORBOARD in own:
            for name in (BOARD, CLIPPED_BOARD):
                if name in own:
                    verdict = "met" if own[name] <= own[TENSORBOARD] else "NOT met"
                    print(
                        f"  {name} / {TENSORBOARD}: {own[name] / own[TENSORBOARD]:.2f}x, {verdict}"
                    )

    # ------------------------------------------------------------ probe and pictures
    def probe_and_pictures(self):
        """Times, inside `fit`, the probe's gradient, one probe write and the pictures of a histogram epoch."""
        a = self.args
        model = self.build(self.adam())
        k = a.probe_batch
        board = gk.callbacks.GradientBoard(
            os.path.join(self.log_root, "probe"),
            histogram_freq=1,
            time_probe=(self.x[:k], self.y[:k]),
            write_plots=True,
        )
        times = collections.defaultdict(list)  # key -> [(wall ms, cpu ms)]
        inner = [(0.0, 0.0)]  # the probe's gradient inside the current probe write
        recording = [False]

        def timing(key, fn):
            def wrapper(*args, **kwargs):
                if key == "probe":
                    inner[0] = (0.0, 0.0)
                start, start_cpu = time.perf_counter(), time.process_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    took = (
                        (time.perf_counter() - start) * 1e3,
                        (time.process_time() - start_cpu) * 1e3,
                    )
                    if key == "compute":
                        inner[0] = took
                    if recording[0]:
                        times[key].append(took)
                        if key == "probe":  # the write without the gradient it computes
                            times["probe rest"].append(
                                (took[0] - inner[0][0], took[1] - inner[0][1])
                            )

            return wrapper

        # The board calls these on itself at each histogram epoch (private names: update them if they change).
        board._write_time_probe = timing("probe", board._write_time_probe)
        board._write_depth = timing("depth", board._write_depth)
        x, y = (
            self.x[: 2 * a.batch_size],
            self.y[: 2 * a.batch_size],
        )  # 2 steps an epoch: the probe does not depend on it
        fit = lambda: model.fit(
            x, y, batch_size=a.batch_size, epochs=a.epochs, verbose=0, callbacks=[board]
        )
        fit()  # traces the train function and the probe; not timed
        board._probe.compute = timing("compute", board._probe.compute)
        recording[0] = True
        for r in range(a.rounds):
            for plots in (True, False) if r % 2 == 0 else (False, True):
                board.write_plots = plots
                fit()
                for key in ("probe", "probe rest", "depth"):
                    times[key, plots] += times.pop(key)
        recording[0] = False
        targets = [name for name, _, _ in board._probe.compute()]

        def med(key, column):
            return statistics.median(t[column] for t in times[key])

        def both(key):
            return f"{med(key, 0):.1f} ms (cpu {med(key, 1):.1f} ms)"

        print(
            f"\ntime probe ({k} sequences of T={a.timesteps}; targets {', '.join(targets)}; traced "
            f"{board._probe.trace_count} time(s); 0 on PyTorch, eager) and pictures, timed inside fit, "
            f"median over {len(times['compute'])} histogram epochs; not part of the table above:"
        )
        print(f"  probe gradient (TimeProbe.compute): {both('compute')}")
        print(
            f"  one probe write, no picture (gradient + tensors + scalars): {both(('probe', False))}; "
            f"without the gradient: {both(('probe rest', False))}"
        )
        print(
            f"  one probe write with its {len(targets)} picture(s): {both(('probe', True))}; "
            f"without the gradient: {both(('probe rest', True))}"
        )
        print(
            f"  gradient-depth write: {both(('depth', False))} without its picture, {both(('depth', True))} with it"
        )
        extra = [
            sum(med((key, True), c) - med((key, False), c) for key in ("probe rest", "depth"))
            for c in (0, 1)
        ]
        print(
            f"  pictures of one histogram epoch ({len(targets) + 1} images; write_plots=True minus False, the "
            f"probe's gradient left out): {extra[0]:.1f} ms (cpu {extra[1]:.1f} ms)"
        )


def print_target(ratio):
    """Per mode, GradientBoard's ratios against Keras TensorBoard's."""
    for mode, label in MODES.items():
        limit = ratio[mode, TENSORBOARD]
        checks = [
            f"{n} {ratio[mode, n]:.3f} ({'met' if ratio[mode, n] <= limit else 'NOT met'})"
            for n in (BOARD, CLIPPED_BOARD)
        ]
        print(f"  {label}: keras TensorBoard {limit:.3f}; " + "; ".join(checks))


if __name__ == "__main__":
    main()
