"""Times recurrent layers' training steps in `model.fit`, the path users run.

Compares, in one run, on the same data and backend:

- `keras_gradkit.layers.IndRNN` (the fast layer),
- `keras.layers.RNN(keras_gradkit.layers.IndRNNCell)` (the cell in Keras's loop),
- `keras.layers.LSTM`,
- `keras_gradkit.layers.MUT1` (a gated cell in Keras's loop, as LSTM),
- `keras_gradkit.layers.MinGRU` and `LRU` in both modes (`mode="parallel"`,
  an associative scan, and `mode="sequential"`, a loop), and `MinLSTM` in
  the parallel mode. `LRU` keeps the width of its input, so its model
  projects the input to `units` first (`Dense(units) -> LRU(units)`);
- `fit overhead`: the same model without the recurrent layer (the time
  steps averaged, then `Dense(1)`), i.e. what `fit` costs around the layer;
- the floor: the IndRNN recurrence's forward and backward pass, input
  projection included, as one fused loop compiled by numba on one thread
  (a NumPy loop when numba is not installed; the table says which), timed
  first, in processes of its own (`fused_floor.py`): the fastest of three
  processes' medians.

Each model is `Input((T, features)) -> layer(units) -> Dense(1)`, compiled
with SGD and MSE. The first epoch (tracing, compiling, first steps) is timed
apart; then the models take turns, one epoch each. Within an epoch the step
time is the wall time from the end of its first step to the end of its last,
over the steps between (each step waited for, as `fit`'s progress bar does),
so the epoch's setup, which users spread over many steps, stays out; the
table reports the median over the epochs.

    KERAS_BACKEND=jax python benchmarks/rnn_speed.py
    python benchmarks/rnn_speed.py --backend all --layers gk.IndRNN LSTM MUT1 "MinGRU parallel"
    python benchmarks/rnn_speed.py --backend torch --timesteps 100 1000 3000

numba is a benchmark-only dependency: `pip install numba`.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch", "all"], default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per model")
    parser.add_argument(
        "--step-budget",
        type=float,
        default=2.0,
        help="about this many seconds of steps per timed epoch",
    )
    parser.add_argument("--layers", nargs="+", default=None, help="subset of the layer names")
    parser.add_argument(
        "--slow-step",
        type=float,
        default=20.0,
        help="a layer whose first epoch (one step) takes longer is timed on one more step only",
    )
    parser.add_argument(
        "--lstm-max-timesteps", type=int, default=None, help="skip LSTM above this length"
    )
    return parser.parse_args()


ARGS = parse_args()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _per_backend import dispatch  # noqa: E402

if dispatch(ARGS.backend, __file__):
    sys.exit(0)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_gradkit as gk  # noqa: E402

FLOOR_REPEATS = 9
# The same loop measured either about 23 or about 32 ms at T = 1000 depending
# on the process (memory placement, on the machine of benchmarks/README.md), so
# the floor is the fastest of a few processes' medians.
FLOOR_PROCESSES = 3

LAYERS = {
    "gk.IndRNN": lambda units: gk.layers.IndRNN(units),
    "RNN(IndRNNCell)": lambda units: keras.layers.RNN(gk.layers.IndRNNCell(units)),
    "LSTM": lambda units: keras.layers.LSTM(units),
    "MUT1": lambda units: gk.layers.MUT1(units),
    "MinGRU parallel": lambda units: gk.layers.MinGRU(units, mode="parallel"),
    "MinGRU sequential": lambda units: gk.layers.MinGRU(units, mode="sequential"),
    "MinLSTM parallel": lambda units: gk.layers.MinLSTM(units, mode="parallel"),
    "LRU parallel": lambda units: _projected(gk.layers.LRU(units, mode="parallel"), units),
    "LRU sequential": lambda units: _projected(gk.layers.LRU(units, mode="sequential"), units),
    # No recurrence: what `fit` costs around the layer (data, Dense, loss,
    # optimizer, callbacks). The floor has none of it.
    "fit overhead": lambda units: keras.layers.GlobalAveragePooling1D(),
}


# The two modes of one layer, whose ratio the table ends with.
MODE_PAIRS = (("MinGRU parallel", "MinGRU sequential"), ("LRU parallel", "LRU sequential"))


def _projected(layer, units):
    """`Dense(units)` then `layer`: the LRU keeps its input's width."""
    dense = keras.layers.Dense(units)
    return lambda inputs: layer(dense(inputs))


class StepTimer(keras.callbacks.Callback):
    """Times an epoch, and the steady-state step within it: the wall time
    between the ends of the epoch's first and last steps, each waited for
    (the loss read back, as `fit`'s progress bar does), over the steps
    between. The epoch's setup (the data iterator), which users spread over
    many steps, stays out of it."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.ends.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start
        steps = len(self.ends) - 1
        self.step_seconds = (self.ends[-1] - self.ends[0]) / steps if steps else self.seconds


def make_model(name, timesteps, features, units):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((timesteps, features))
    outputs = keras.layers.Dense(1)(LAYERS[name](units)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    return model


def fit_epoch(model, x, y, batch, steps):
    """Runs one epoch of `steps` steps; returns the epoch's seconds and the
    steady-state seconds per step (the epoch's, for a one-step epoch)."""
    timer = StepTimer()
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=1,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds, timer.step_seconds


def time_layers(names, timesteps, args):
    rng = np.random.default_rng(0)
    data_batches = 8
    x = rng.uniform(size=(args.batch * data_batches, timesteps, args.features)).astype("float32")
    y = rng.uniform(size=(args.batch * data_batches, 1)).astype("float32")
    models, first, steps, per_step, rounds = {}, {}, {}, {}, {}
    for name in names:
        models[name] = make_model(name, timesteps, args.features, args.units)
        first[name] = fit_epoch(models[name], x, y, args.batch, 1)[0]
        one = fit_epoch(models[name], x, y, args.batch, 1)[
            0
        ]  # a first estimate, to size the epochs
        # At least two steps (the steady state is timed between steps' ends).
        steps[name] = int(min(data_batches, max(2, 1 + args.step_budget // one)))
        # A slow layer is timed on one more one-step epoch only.
        per_step[name] = [one] if first[name] > args.slow_step else []
        rounds[name] = 1 if per_step[name] else args.rounds
        if per_step[name]:
            steps[name] = 1
    for _ in range(args.rounds):
        for name in names:
            if len(per_step[name]) < rounds[name]:
                per_step[name].append(fit_epoch(models[name], x, y, args.batch, steps[name])[1])
    return {
        name: (statistics.median(t) * 1000, first[name], f"{steps[name]}x{rounds[name]}")
        for name, t in per_step.items()
    }


def floor_ms(timesteps, args):
    """`{timesteps: (ms, kind)}` from `fused_floor.py`, run in processes of
    its own (no deep learning framework imported, nothing else running): the
    fastest of `FLOOR_PROCESSES` processes' medians."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_floor.py")
    command = [
        sys.executable,
        script,
        "--timesteps",
        *map(str, timesteps),
        "--batch",
        str(args.batch),
        "--units",
        str(args.units),
        "--features",
        str(args.features),
        "--repeats",
        str(FLOOR_REPEATS),
    ]
    best = {}
    for _ in range(FLOOR_PROCESSES):
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        for t, (ms, kind) in json.loads(output.strip().splitlines()[-1]).items():
            if int(t) not in best or ms < best[int(t)][0]:
                best[int(t)] = (ms, kind)
    return best


def header(args):
    backend = keras.backend.backend()
    versions = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    module = __import__(versions[backend])
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(
        f"backend {backend} {module.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPU cores; batch {args.batch}, units {args.units}, "
        f"features {args.features}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def print_targets(rows):
    """The issue's targets, from this run: `gk.IndRNN` at least as fast as the
    cell, 5x faster than LSTM at T = 1000, within 1.5x of the floor."""
    print("\ntargets (this run):")
    for timesteps, result, floor in rows:
        fast = result.get("gk.IndRNN", (None,))[0]
        if fast is None:
            continue
        checks = []
        if "RNN(IndRNNCell)" in result:
            ratio = result["RNN(IndRNNCell)"][0] / fast
            checks.append(
                f"cell / gk.IndRNN {ratio:.2f}x ({'met' if ratio >= 1.0 else 'NOT met'}, >= 1.00x)"
            )
        if "LSTM" in result and timesteps == 1000:
            ratio = result["LSTM"][0] / fast
            checks.append(
                f"LSTM / gk.IndRNN {ratio:.1f}x ({'met' if ratio >= 5.0 else 'NOT met'}, >= 5x)"
            )
        ratio = fast / floor
        checks.append(
            f"gk.IndRNN / floor {ratio:.2f}x ({'met' if ratio <= 1.5 else 'NOT met'}, <= 1.50x)"
        )
        if "fit overhead" in result:
            net = (fast - result["fit overhead"][0]) / floor
            checks.append(f"(gk.IndRNN - fit overhead) / floor {net:.2f}x")
        print(f"  T = {timesteps}: " + "; ".join(checks))


def print_modes(rows):
    """Each linear recurrence's sequential step time over its parallel one:
    above 1, the parallel scan is faster."""
    lines = []
    for timesteps, result, _ in rows:
        for parallel, sequential in MODE_PAIRS:
            if parallel in result and sequential in result:
                ratio = result[sequential][0] / result[parallel][0]
                lines.append(f"  T = {timesteps}: {sequential} / {parallel} {ratio:.2f}x")
    if lines:
        print("\nsequential / parallel (above 1: the parallel scan is faster):")
        print("\n".join(lines))


def main(args):
    names = args.layers or list(LAYERS)
    header(args)
    rows = []
    floors = floor_ms(args.timesteps, args)
    print()
    print(
        "| T | layer | ms / step (fit) | first epoch, s | steps timed | vs gk.IndRNN | vs floor |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for timesteps in args.timesteps:
        skip_lstm = args.lstm_max_timesteps is not None and timesteps > args.lstm_max_timesteps
        floor, kind = floors[timesteps]
        result = time_layers([n for n in names if not (skip_lstm and n == "LSTM")], timesteps, args)
        rows.append((timesteps, result, floor))
        fast = result.get("gk.IndRNN", (None,))[0]
        for name, (ms, first, steps) in result.items():
            speedup = f"{ms / fast:.2f}x" if fast else "-"
            print(
                f"| {timesteps} | {name} | {ms:.1f} | {first:.1f} | {steps} | {speedup} | {ms / floor:.2f}x |",
                flush=True,
            )
        if skip_lstm:
            print(
                f"| {timesteps} | LSTM | not timed (--lstm-max-timesteps {args.lstm_max_timesteps}) | | | | |"
            )
        print(
            f"| {timesteps} | floor ({kind}) | {floor:.1f} | - | {FLOOR_PROCESSES}x{FLOOR_REPEATS} | - | 1.00x |",
            flush=True,
        )
    print_targets(rows)
    print_modes(rows)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("'vs gk.IndRNN': this layer's time over gk.IndRNN's (above 1: gk.IndRNN is faster).")


if __name__ == "__main__":
    main(ARGS)
