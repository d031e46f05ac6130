"""Depth, measured: plain IndRNN stacks, residual IndRNN and stacked LSTM on sequential digits.

Scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, no download) are
read pixel by pixel, a sequence of T = 64 steps with one feature, and
classified from the last step. Three families, each with N recurrent layers
of `--units` units:

- `plain`: N `keras_gradkit.layers.IndRNN` layers with ReLU, stacked with no
  shortcut and no normalization;
- `residual`: a `Dense(units)` input weight, then N / 2
  `keras_gradkit.layers.ResidualIndRNN` blocks (two recurrences each, so N
  recurrent layers), pre-activation batch normalization, identity shortcuts,
  and batch normalization of the last step before the head;
- `lstm`: N `keras.layers.LSTM` layers.

The recurrent weights are bounded by `2 ** (1 / T)`; the last recurrent layer
starts in `[0.5 ** (1 / T), 2 ** (1 / T)]`, the paper's recipe for tasks that
read only the final output. All use Adam with `global_clipnorm=10`, as the
official IndRNN code does, and a `Dense(10, softmax)` head.

For each model the script prints the test accuracy, the mean time per epoch
(first epoch, which traces the graph, excluded when there are several) and
the ratio of gradient norms across depth at initialization and after
training: the L2 norm of the gradient of the cross-entropy on a fixed batch
with respect to all trainable variables of the first layer that has any,
divided by the same for the last one (the classifier head). A residual block
counts as one layer. Gradients come from `keras_gradkit._gradients`, the
package's one place for gradients on every backend. With `--gradboard`,
`keras_gradkit.callbacks.GradientBoard` writes gradient logs under
`--logdir/<model>_N<depth>`.

    python examples/deep_rnn.py --quick                    # seconds: N = 2, one epoch, small data
    python examples/deep_rnn.py --depths 2 6 --epochs 5
    python examples/deep_rnn.py --depths 2 6 12 24 --epochs 20 --gradboard
    tensorboard --logdir runs/deep_rnn
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_gradkit  # noqa: E402
from keras_gradkit._gradients import value_and_gradients  # noqa: E402

MODELS = ("plain", "residual", "lstm")
TIMESTEPS = 64
# Keras's default 0.99 leaves the moving variance near its initial 1 after a
# few hundred steps (0.99 ** 200 = 0.13), far from the true variance, and
# inference then fails while training accuracy looks fine.
BATCH_NORM_MOMENTUM = 0.9


def load_data(seed, limit=None):
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32").reshape(-1, TIMESTEPS, 1)
    y = digits.target.astype("int32")
    if limit:
        x, y = x[:limit], y[:limit]
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def _last_recurrent_initializer():
    return keras.initializers.RandomUniform(0.5 ** (1 / TIMESTEPS), 2 ** (1 / TIMESTEPS))


def recurrent_stack(kind, depth, units):
    """The hidden layers of one model, input `(batch, T, 1)` to `(batch, units)`."""
    if kind == "lstm":
        return [keras.layers.LSTM(units, return_sequences=i < depth - 1) for i in range(depth)]
    if kind == "plain":
        return [
            keras_gradkit.layers.IndRNN(
                units, timesteps=TIMESTEPS, return_sequences=i < depth - 1,
                recurrent_initializer=_last_recurrent_initializer() if i == depth - 1 else None)
            for i in range(depth)
        ]
    if depth % 2:
        raise ValueError(f"A residual stack has two recurrences per block: `depth` must be even. Received: {depth}")
    blocks = [keras.layers.Dense(units, name="input_weight")]
    for i in range(depth // 2):
        last = i == depth // 2 - 1
        blocks.append(keras_gradkit.layers.ResidualIndRNN(
            units, timesteps=TIMESTEPS, momentum=BATCH_NORM_MOMENTUM,
            recurrent_initializer=_last_recurrent_initializer() if last else None))
    # Pre-activation blocks leave the residual stream unnormalized: normalize
    # the step that is read out, as pre-activation ResNets end with BN.
    return blocks + [keras.layers.Lambda(lambda h: h[:, -1], name="last_step"),
                     keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name="output_batch_norm")]


def build_model(kind, depth, units):
    inputs = keras.Input((TIMESTEPS, 1))
    hidden = inputs
    for layer in recurrent_stack(kind, depth, units):
        hidden = layer(hidden)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(hidden)
    return keras.Model(inputs, outputs, name=f"{kind}_N{depth}")


def layer_gradient_norms(model, x, y):
    """L2 norm of the gradient of each layer's trainable variables together,
    for the model's layers with trainable variables, in order."""
    layers = [layer for layer in model.layers if layer.trainable_weights]
    variables = [v for layer in layers for v in layer.trainable_weights]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    _, _, grads = value_and_gradients(lambda: loss_fn(y, model(x, training=True)), (), variables)
    norms, start = [], 0
    for layer in layers:
        count = len(layer.trainable_weights)
        norms.append(float(np.sqrt(sum(np.sum(np.square(g)) for g in grads[start : start + count]))))
        start += count
    return norms


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def run_model(kind, depth, args, data):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(args.seed)
    model = build_model(kind, depth, args.units)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=10.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    probe_x, probe_y = x_train[: args.batch_size], y_train[: args.batch_size]
    norms_init = layer_gradient_norms(model, probe_x, probe_y)
    timer = EpochTimer()
    callbacks = [timer]
    if args.gradboard:
        callbacks.append(keras_gradkit.callbacks.GradientBoard(
            os.path.join(args.logdir, f"{kind}_N{depth}"), histogram_freq=1))
    if args.epochs > 0:
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                  verbose=0, callbacks=callbacks)
    norms_final = layer_gradient_norms(model, probe_x, probe_y)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    epoch_seconds = getattr(timer, "seconds", [])
    epoch_seconds = epoch_seconds[1:] or epoch_seconds or [float("nan")]
    return {
        "accuracy": float(accuracy),
        "epoch_seconds": float(np.mean(epoch_seconds)),
        "ratio_init": norms_init[0] / norms_init[-1],
        "ratio_final": norms_final[0] / norms_final[-1],
        "norms_init": norms_init,
        "norms_final": norms_final,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 6, 12, 24],
                        help="numbers of recurrent layers N (even, for the residual model)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20, help="0: only the gradient ratio at initialization")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=None, help="use only the first SAMPLES images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N = 2, 1 epoch, 8 units, 200 images")
    parser.add_argument("--logdir", default=os.path.join("runs", "deep_rnn"))
    parser.add_argument("--gradboard", action="store_true",
                        help="log gradients with keras_gradkit.callbacks.GradientBoard")
    args = parser.parse_args(argv)
    if args.quick:
        args.depths, args.epochs, args.units, args.samples = [2], 1, 8, 200

    data = load_data(args.seed, args.samples)
    print(f"sequential digits: {len(data[0])} train / {len(data[1])} test sequences of {TIMESTEPS} pixels; "
          f"{args.units} units, Adam lr {args.learning_rate}, {args.epochs} epochs, batch {args.batch_size}, "
          f"backend {keras.backend.backend()}")
    print("| model | N | test accuracy | s / epoch | first/last grad norm at init | after training |")
    print("|---|---|---|---|---|---|")
    results = {}
    for depth in args.depths:
        for kind in args.models:
            r = run_model(kind, depth, args, data)
            results[(kind, depth)] = r
            print(f"| {kind} | {depth} | {r['accuracy']:.3f} | {r['epoch_seconds']:.1f} | "
                  f"{r['ratio_init']:.2e} | {r['ratio_final']:.2e} |", flush=True)
    if args.gradboard:
        print(f"GradientBoard logs: tensorboard --logdir {args.logdir}")
    return results


if __name__ == "__main__":
    main()
