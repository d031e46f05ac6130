"""Training-step time of keras_gradkit's LSTM/GRU against Keras's, in one run.

`keras_gradkit.layers.LSTM` and `GRU` only change the initial bias, so they
must run as fast as `keras.layers.LSTM` and `GRU` (the same kernels; the
acceptance bound is a ratio within 1.05). `keras.layers.RNN` over
`keras_gradkit.layers.LayerNormLSTMCell` is timed against `keras.layers.LSTM`
for the record: it runs the generic step loop plus three layer normalizations.

Each model does one warm-up step, then the models are timed in interleaved
rounds (in a new random order each round, so machine noise hits all of them
alike); a second copy of each Keras model measures the noise floor; the table
reports the median and minimum wall time per step and the median CPU time of
the process per step (less sensitive to other processes on a shared machine),
and their ratios.

    python benchmarks/gated_speed.py
    python benchmarks/gated_speed.py --timesteps 200 --units 128 --rounds 15
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_gradkit

# (name, baseline name, factory(units, timesteps))
CANDIDATES = [
    ("keras.layers.LSTM", None, lambda u, t: keras.layers.LSTM(u)),
    # A second, identical Keras model: its ratio shows the noise of the machine.
    ("keras.layers.LSTM (again)", "keras.layers.LSTM", lambda u, t: keras.layers.LSTM(u)),
    (
        "gk.layers.LSTM",
        "keras.layers.LSTM",
        lambda u, t: keras_gradkit.layers.LSTM(u, forget_bias=1.0),
    ),
    (
        "gk.layers.LSTM(chrono)",
        "keras.layers.LSTM",
        lambda u, t: keras_gradkit.layers.LSTM(u, chrono_timesteps=t),
    ),
    ("keras.layers.GRU", None, lambda u, t: keras.layers.GRU(u)),
    ("keras.layers.GRU (again)", "keras.layers.GRU", lambda u, t: keras.layers.GRU(u)),
    (
        "gk.layers.GRU",
        "keras.layers.GRU",
        lambda u, t: keras_gradkit.layers.GRU(u, update_bias=1.0),
    ),
    (
        "keras.layers.GRU(reset_after=False)",
        None,
        lambda u, t: keras.layers.GRU(u, reset_after=False),
    ),
    (
        "gk.layers.GRU(reset_after=False)",
        "keras.layers.GRU(reset_after=False)",
        lambda u, t: keras_gradkit.layers.GRU(u, reset_after=False, update_bias=1.0),
    ),
    (
        "RNN(gk.layers.LayerNormLSTMCell)",
        "keras.layers.LSTM",
        lambda u, t: keras.layers.RNN(keras_gradkit.layers.LayerNormLSTMCell(u)),
    ),
]


def build_model(factory, args):
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((args.timesteps, args.features)),
            factory(args.units, args.timesteps),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=100)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch_size, args.timesteps, args.features)).astype("float32")
    y = rng.normal(size=(args.batch_size, 1)).astype("float32")
    models = {name: build_model(factory, args) for name, _, factory in CANDIDATES}
    for model in models.values():
        model.train_on_batch(x, y)  # trace and warm up
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    names = list(models)
    for _ in range(args.rounds):
        for index in rng.permutation(len(names)):  # a new order each round
            name, model = names[index], models[names[index]]
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps_per_round):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / args.steps_per_round)
            cpu_times[name].append((time.process_time() - cpu_start) / args.steps_per_round)

    print(
        f"training step (train_on_batch), batch {args.batch_size}, T={args.timesteps}, units {args.units}, "
        f"{args.rounds} interleaved rounds of {args.steps_per_round} steps, backend {keras.backend.backend()}"
    )
    print(
        "| layer | wall median ms | wall min ms | CPU median ms | baseline | ratio wall median | ratio wall min | ratio CPU median |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, baseline, _ in CANDIDATES:
        row = [statistics.median(times[name]), min(times[name]), statistics.median(cpu_times[name])]
        cells = " | ".join(f"{v * 1e3:.1f}" for v in row)
        if baseline is None:
            print(f"| {name} | {cells} | | | | |")
            continue
        base = [
            statistics.median(times[baseline]),
            min(times[baseline]),
            statistics.median(cpu_times[baseline]),
        ]
        ratios = " | ".join(f"{a / b:.3f}" for a, b in zip(row, base))
        print(f"| {name} | {cells} | {baseline} | {ratios} |")


if __name__ == "__main__":
    main()
