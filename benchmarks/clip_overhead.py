"""Training-step time of `ClippedOptimizer` against Keras's own `global_clipnorm`.

All configurations train the same model on the same data in one process; the
runs are interleaved (config A, B, C, A, B, C, ...) and repeated, and the
table reports the median and the minimum time per step and their ratio to
`Adam(global_clipnorm=1.0)`. Target: ratio at most 1.05.

    python benchmarks/clip_overhead.py                  # a few minutes on 2 CPU cores
    python benchmarks/clip_overhead.py --repeats 7 --steps 20 --apply-steps 50   # the README table
    python benchmarks/clip_overhead.py --model lstm --timesteps 100 --repeats 9
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

import keras_gradkit as gk

C = gk.optimizers.ClippedOptimizer
CONFIGS = {
    "keras global_clipnorm": lambda: keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
    "ClipByGlobalNorm": lambda: C(keras.optimizers.Adam(1e-3), gk.clipping.ClipByGlobalNorm(1.0)),
    "ClipByGlobalNorm, no update norms": lambda: C(
        keras.optimizers.Adam(1e-3), gk.clipping.ClipByGlobalNorm(1.0), record_update_norms=False
    ),
    "AutoClip(10, 10000)": lambda: C(
        keras.optimizers.Adam(1e-3), gk.clipping.AutoClip(10.0, 10000)
    ),
    "NoClip + keras global_clipnorm": lambda: C(
        keras.optimizers.Adam(1e-3, global_clipnorm=1.0), gk.clipping.NoClip()
    ),
}


def build_model(args):
    keras.utils.set_random_seed(0)
    rnn = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM}[args.model]
    return keras.Sequential(
        [
            keras.Input((args.timesteps, 2)),
            rnn(args.units, return_sequences=True),
            rnn(args.units),
            keras.layers.Dense(1),
        ]
    )


def time_apply_only(args, models, x, y):
    """Median time of `optimizer.apply` alone (one tf.function, fixed gradients), in microseconds."""
    model = next(iter(models.values()))
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[: args.batch_size], model(x[: args.batch_size]))
    grads = [tf.constant(g) for g in tape.gradient(loss, model.trainable_variables)]
    steps = {}

    def make_run(opt, variables):
        @tf.function(jit_compile=args.jit)
        def run():
            for _ in range(args.apply_steps):
                opt.apply(grads, variables)

        return run

    for name, m in models.items():
        steps[name] = make_run(m.optimizer, m.trainable_variables)
        steps[name]()
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, run in steps.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / args.apply_steps * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["simple_rnn", "lstm"], default="simple_rnn")
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--apply-steps", type=int, default=20, help="optimizer steps per timed apply-only run"
    )
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.uniform(size=(n, args.timesteps, 2)).astype("float32")
    y = rng.uniform(size=(n, 1)).astype("float32")

    models = {}
    for name, make in CONFIGS.items():
        model = build_model(args)
        model.compile(optimizer=make(), loss="mse", jit_compile=args.jit)
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # trace and warm up
        models[name] = model
    wall = {name: [] for name in CONFIGS}
    cpu = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, model in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
            wall[name].append((time.perf_counter() - start) / args.steps * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / args.steps * 1e3)

    base = "keras global_clipnorm"
    print(
        f"{args.model} 2 layers x {args.units} units, T={args.timesteps}, batch {args.batch_size}, "
        f"Adam, jit_compile={args.jit}, {args.repeats} interleaved repeats x {args.steps} steps"
    )
    print(
        "wall = elapsed time per step; cpu = process CPU time per step (less sensitive to other load)"
    )
    header = [
        "configuration",
        "wall median ms",
        "wall min ms",
        "cpu median ms",
        "ratio wall median",
        "ratio wall min",
        "ratio cpu median",
    ]
    print("| " + " | ".join(header) + " |")
    print(
        "|"
        + "|".join(
            "-" * (len(h) + 2) if i == 0 else "-" * (len(h) + 1) + ":" for i, h in enumerate(header)
        )
        + "|"
    )
    bw, bm, bc = statistics.median(wall[base]), min(wall[base]), statistics.median(cpu[base])
    for name in CONFIGS:
        w, m, c = statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name])
        cells = [
            f"{w:.2f}",
            f"{m:.2f}",
            f"{c:.2f}",
            f"{w / bw:.3f}",
            f"{m / bm:.3f}",
            f"{c / bc:.3f}",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")

    apply_us = time_apply_only(args, models, x, y)
    print()
    print(
        "optimizer.apply alone (same weights, fixed gradients, one tf.function), median of the repeats;"
    )
    print(
        "estimated step ratio = (keras step + extra apply time) / keras step, with the keras wall median step"
    )
    print("| configuration | apply median us | extra vs keras us | estimated step ratio |")
    print("|---------------|----------------:|------------------:|---------------------:|")
    for name, us in apply_us.items():
        extra = us - apply_us[base]
        print(f"| {name} | {us:.1f} | {extra:+.1f} | {(bw * 1e3 + extra) / (bw * 1e3):.3f} |")


if __name__ == "__main__":
    main()
