"""Training time with `GradientBoard` against plain `fit`, in one run.

The same model trains on the same data with: plain `fit` (Adam, no callback);
`GradientBoard(update_freq="epoch", histogram_freq=1)`; and
`GradientBoard(update_freq="batch", histogram_freq=1)`. The callback wraps
Adam in a monitor-only `ClippedOptimizer` with `record_gradients=True`, so the
timing includes the statistics recorded in the step and the writing of the
event files. Each timed run is one epoch (one `fit` call) of `--steps` steps,
the runs are interleaved (A, B, C, A, B, C, ...) and repeated, and the table
gives the median and minimum time per step and the ratio to plain `fit`.
Targets: at most 1.10 with `update_freq="epoch"`, 1.25 with `"batch"`.

    python benchmarks/gradboard_overhead.py            # ~2-4 min on 2 CPU cores
    python benchmarks/gradboard_overhead.py --model lstm --timesteps 100 --repeats 9
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradkit as gk  # noqa: E402

BASE = "plain fit"


def build_model(args):
    keras.utils.set_random_seed(0)
    rnn = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM}[args.model]
    return keras.Sequential(
        [keras.Input((args.timesteps, 2)), rnn(args.units, return_sequences=True), rnn(args.units), keras.layers.Dense(1)]
    )


def make_configs(log_root):
    return {
        BASE: lambda: [],
        'GradientBoard update_freq="epoch"': lambda: [
            gk.callbacks.GradientBoard(os.path.join(log_root, "epoch"), histogram_freq=1, update_freq="epoch")
        ],
        'GradientBoard update_freq="batch"': lambda: [
            gk.callbacks.GradientBoard(os.path.join(log_root, "batch"), histogram_freq=1, update_freq="batch")
        ],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["simple_rnn", "lstm"], default="simple_rnn")
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    parser.add_argument("--logdir", default=None, help="where GradientBoard writes (default: a temporary folder)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.uniform(size=(n, args.timesteps, 2)).astype("float32")
    y = rng.uniform(size=(n, 1)).astype("float32")

    with tempfile.TemporaryDirectory() as tmp:
        configs = make_configs(args.logdir or tmp)
        runs = {}
        for name, make_callbacks in configs.items():
            model = build_model(args)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=args.jit)
            callbacks = make_callbacks()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, callbacks=callbacks)  # trace, warm up
            runs[name] = (model, callbacks)
        wall = {name: [] for name in configs}
        cpu = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, (model, callbacks) in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, callbacks=callbacks)
                wall[name].append((time.perf_counter() - start) / args.steps * 1e3)
                cpu[name].append((time.process_time() - start_cpu) / args.steps * 1e3)

    print(
        f"{args.model} 2 layers x {args.units} units, T={args.timesteps}, batch {args.batch_size}, Adam, "
        f"jit_compile={args.jit}, {args.repeats} interleaved repeats x 1 epoch of {args.steps} steps, "
        "histograms every epoch"
    )
    print("wall = elapsed time per step; cpu = process CPU time per step (less sensitive to other load)")
    header = ["configuration", "wall median ms", "wall min ms", "cpu median ms", "ratio wall median",
              "ratio wall min", "ratio cpu median", "target"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) if i == 0 else "-" * (len(h) + 1) + ":" for i, h in enumerate(header)) + "|")
    bw, bm, bc = statistics.median(wall[BASE]), min(wall[BASE]), statistics.median(cpu[BASE])
    targets = {BASE: "", 'GradientBoard update_freq="epoch"': "<= 1.10", 'GradientBoard update_freq="batch"': "<= 1.25"}
    for name in wall:
        w, m, c = statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name])
        cells = [f"{w:.2f}", f"{m:.2f}", f"{c:.2f}", f"{w / bw:.3f}", f"{m / bm:.3f}", f"{c / bc:.3f}", targets[name]]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
