"""Times one forward+backward training step of IndRNN and its alternatives.

Compares, in one run and on the same inputs, `keras_gradkit.layers.IndRNN`,
`keras.layers.RNN(keras_gradkit.layers.IndRNNCell)`, `keras.layers.SimpleRNN`
(relu) and `keras.layers.LSTM`, and prints milliseconds per step and ratios.

    python benchmarks/rnn_speed.py                 # batch 64, 128 units, T in {100, 1000}
    python benchmarks/rnn_speed.py --timesteps 200 --repeats 5

Each configuration is traced once (tf.function), warmed up, then timed in
interleaved rounds; the table reports the median over rounds.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradkit as gk  # noqa: E402

LAYERS = {
    "gk.IndRNN": lambda units: gk.layers.IndRNN(units),
    "RNN(gk.IndRNNCell)": lambda units: keras.layers.RNN(gk.layers.IndRNNCell(units)),
    "SimpleRNN(relu)": lambda units: keras.layers.SimpleRNN(units, activation="relu"),
    "LSTM": lambda units: keras.layers.LSTM(units),
}


def make_step(layer, inputs):
    layer(inputs)  # build
    weights = layer.trainable_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(inputs, training=True)))
        return tape.gradient(loss, weights)

    return step


def time_once(step):
    start = time.perf_counter()
    grads = step()
    for g in grads:
        g.numpy()
    return time.perf_counter() - start


def run(batch, units, timesteps, features, repeats):
    inputs = tf.constant(np.random.default_rng(0).uniform(size=(batch, timesteps, features)).astype("float32"))
    steps = {name: make_step(factory(units), inputs) for name, factory in LAYERS.items()}
    for step in steps.values():
        time_once(step)
        time_once(step)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(time_once(step))
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, {os.cpu_count()} CPU cores, "
          f"batch {args.batch}, units {args.units}, features {args.features}")
    print("| T | layer | ms / step | gk.IndRNN speed-up |")
    print("|---|---|---|---|")
    for timesteps in args.timesteps:
        result = run(args.batch, args.units, timesteps, args.features, args.repeats)
        fast = result["gk.IndRNN"]
        for name, ms in result.items():
            print(f"| {timesteps} | {name} | {ms:.1f} | {ms / fast:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
