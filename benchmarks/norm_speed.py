"""Times one forward+backward training step of the normalization layers
against their Keras counterparts.

Compares, in one run and on the same inputs:
  * `keras_gradkit.layers.GroupNorm` against `keras.layers.GroupNormalization`
    (target ratio <= 1.15 without a mask), and GroupNorm with a mask;
  * `keras_gradkit.layers.CosineConv2D` against `keras.layers.Conv2D`
    (target ratio <= 2.5), and `CosineDense` against `keras.layers.Dense`;
  * `keras_gradkit.layers.WeightNormalization` around `Dense` and `Conv2D`
    against the plain layer, timed in `model.fit` (a second table): one
    epoch of `--fit-steps` batches per timing, after a warm-up epoch that
    traces the step and performs the data-dependent initialization.

    python benchmarks/norm_speed.py               # default shapes, 15 rounds of 3 steps
    python benchmarks/norm_speed.py --repeats 5 --batch 16
    python benchmarks/norm_speed.py --only-fit --fit-rounds 5   # WeightNormalization only

A step is the forward pass and the gradients with respect to the weights and
the input (as inside a deeper network), traced once with tf.function, warmed
up, then timed in interleaved rounds (ours and Keras's alternate within a
round); the table reports the median and the minimum over rounds.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import keras_gradkit as gk


def make_step(layer, inputs, mask=None):
    layer(inputs) if mask is None else layer(inputs, mask=mask)  # build
    weights = layer.trainable_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            kwargs = {} if mask is None else {"mask": mask}
            loss = tf.reduce_mean(tf.square(layer(inputs, training=True, **kwargs)))
        return tape.gradient(loss, [inputs] + weights)

    return step


def time_once(step, inner=1):
    """Seconds per step, averaged over `inner` consecutive steps."""
    start = time.perf_counter()
    for _ in range(inner):
        for g in step():
            g.numpy()
    return (time.perf_counter() - start) / inner


def cases(batch):
    rng = np.random.default_rng(0)
    seq = tf.constant(rng.normal(size=(batch, 200, 128)).astype("float32"))
    lengths = rng.integers(100, 201, size=batch)
    mask = tf.constant(np.arange(200)[None, :] < lengths[:, None])
    image = tf.constant(rng.normal(size=(batch, 32, 32, 64)).astype("float32"))
    conv_in = tf.constant(rng.normal(size=(batch, 32, 32, 32)).astype("float32"))
    small_in = tf.constant(rng.normal(size=(batch, 8, 8, 16)).astype("float32"))
    dense_in = tf.constant(rng.normal(size=(batch, 512)).astype("float32"))
    return [
        (
            "GroupNorm, seq (B,200,128), G=8",
            1.15,
            lambda: make_step(gk.layers.GroupNorm(8), seq),
            lambda: make_step(keras.layers.GroupNormalization(8), seq),
        ),
        (
            "GroupNorm masked vs Keras unmasked, seq (B,200,128)",
            None,
            lambda: make_step(gk.layers.GroupNorm(8), seq, mask),
            lambda: make_step(keras.layers.GroupNormalization(8), seq),
        ),
        (
            "GroupNorm, image (B,32,32,64), G=32",
            1.15,
            lambda: make_step(gk.layers.GroupNorm(32), image),
            lambda: make_step(keras.layers.GroupNormalization(32), image),
        ),
        (
            "CosineConv2D vs Conv2D, (B,32,32,32) -> 64, 3x3 same",
            2.5,
            lambda: make_step(
                gk.layers.CosineConv2D(64, 3, padding="same", use_bias=True), conv_in
            ),
            lambda: make_step(keras.layers.Conv2D(64, 3, padding="same"), conv_in),
        ),
        (
            "CosineConv2D vs Conv2D, (B,8,8,16) -> 32, 3x3 same",
            2.5,
            lambda: make_step(
                gk.layers.CosineConv2D(32, 3, padding="same", use_bias=True), small_in
            ),
            lambda: make_step(keras.layers.Conv2D(32, 3, padding="same"), small_in),
        ),
        (
            "CosineDense vs Dense, (B,512) -> 512",
            None,
            lambda: make_step(gk.layers.CosineDense(512, use_bias=True), dense_in),
            lambda: make_step(keras.layers.Dense(512), dense_in),
        ),
    ]


def _fit_model(inputs_shape, make_layer, wrap):
    inputs = keras.Input(inputs_shape)
    layer = make_layer()
    hidden = (gk.layers.WeightNormalization(layer) if wrap else layer)(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    return model


def fit_cases(batch, steps):
    rng = np.random.default_rng(1)
    dense_x = rng.normal(size=(batch * steps, 512)).astype("float32")
    conv_x = rng.normal(size=(batch * steps, 16, 16, 32)).astype("float32")
    y = rng.normal(size=(batch * steps, 1)).astype("float32")
    return [
        (
            "WeightNormalization(Dense) vs Dense, (B,512) -> 512",
            (512,),
            lambda: keras.layers.Dense(512, activation="relu"),
            dense_x,
            y,
        ),
        (
            "WeightNormalization(Conv2D) vs Conv2D, (B,16,16,32) -> 64, 3x3 same",
            (16, 16, 32),
            lambda: keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            conv_x,
            y,
        ),
    ]


def time_fit(model, x, y, batch):
    """Seconds per `fit` step over one epoch."""
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return (time.perf_counter() - start) / (len(x) // batch)


def run_fit_table(args):
    built = []
    for name, shape, make_layer, x, y in fit_cases(args.batch, args.fit_steps):
        ours, plain = _fit_model(shape, make_layer, True), _fit_model(shape, make_layer, False)
        time_fit(ours, x, y, args.batch)  # trace, data-dependent init
        time_fit(plain, x, y, args.batch)
        built.append((name, ours, plain, x, y))
    times = {name: ([], []) for name, *_ in built}
    for _ in range(args.fit_rounds):
        for name, ours, plain, x, y in built:
            times[name][0].append(time_fit(ours, x, y, args.batch))
            times[name][1].append(time_fit(plain, x, y, args.batch))
    print(
        f"\nfit: {args.fit_rounds} interleaved rounds of one {args.fit_steps}-step epoch, batch {args.batch}"
    )
    print(
        "| case | WeightNormalization ms/step (median / min) | plain ms/step (median / min) | ratio median | ratio min |"
    )
    print("|---|---|---|---|---|")
    for name, *_ in built:
        ours, plain = times[name]
        print(
            f"| {name} | {statistics.median(ours) * 1e3:.2f} / {min(ours) * 1e3:.2f} "
            f"| {statistics.median(plain) * 1e3:.2f} / {min(plain) * 1e3:.2f} "
            f"| {statistics.median(ours) / statistics.median(plain):.2f} | {min(ours) / min(plain):.2f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--inner", type=int, default=3, help="steps averaged per timing")
    parser.add_argument("--fit-rounds", type=int, default=10, help="interleaved fit rounds")
    parser.add_argument("--fit-steps", type=int, default=20, help="fit steps per timed epoch")
    parser.add_argument(
        "--only-fit", action="store_true", help="only the WeightNormalization fit table"
    )
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # one tf.function per case is intended
    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}, {os.cpu_count()} CPU cores, "
        f"batch {args.batch}, {args.repeats} interleaved rounds of {args.inner} steps"
    )
    if args.only_fit:
        run_fit_table(args)
        return
    built = [(name, target, ours(), theirs()) for name, target, ours, theirs in cases(args.batch)]
    for _, _, ours, theirs in built:
        for _ in range(3):
            time_once(ours)
            time_once(theirs)
    times = {name: ([], []) for name, *_ in built}
    for _ in range(args.repeats):
        for name, _, ours, theirs in built:
            times[name][0].append(time_once(ours, args.inner))
            times[name][1].append(time_once(theirs, args.inner))
    print(
        "| case | ours ms (median / min) | Keras ms (median / min) | ratio median | ratio min | target |"
    )
    print("|---|---|---|---|---|---|")
    for name, target, *_ in built:
        ours, theirs = times[name]
        med = statistics.median(ours) / statistics.median(theirs)
        low = min(ours) / min(theirs)
        verdict = "-" if target is None else f"<= {target} ({'met' if med <= target else 'MISSED'})"
        print(
            f"| {name} | {statistics.median(ours) * 1e3:.2f} / {min(ours) * 1e3:.2f} "
            f"| {statistics.median(theirs) * 1e3:.2f} / {min(theirs) * 1e3:.2f} "
            f"| {med:.2f} | {low:.2f} | {verdict} |",
            flush=True,
        )
    run_fit_table(args)


if __name__ == "__main__":
    main()
