"""Normalization in a deep tanh (or sigmoid) network: do the first layer's gradients survive?

Trains the same 20-layer network on scikit-learn's bundled 8x8 digits
(1,797 images, 10 classes, no download) four ways and prints the test
accuracy and the first layer's gradient norm:

- `plain`: `Dense` (or `Conv2D`) followed by the activation;
- `groupnorm`: `Dense`/`Conv2D`, then `keras_gradkit.layers.GroupNorm`, then
  the activation;
- `cosine`: `keras_gradkit.layers.CosineDense` (or `CosineConv2D`) with a
  bias, then the activation;
- `weightnorm`: `Dense` (or `Conv2D`) wrapped in
  `keras_gradkit.layers.WeightNormalization` (data-dependent initialization
  on the first training batch), then the activation. The first training-mode
  call is the gradient probe at initialization below, so the data-dependent
  initialization uses the probe's 256 training images.

Every variant uses the same optimizer, seed and data split, and a plain
`Dense(10, softmax)` head. The gradient norm is the L2 norm of the gradient of
the cross-entropy with respect to the first layer's kernel, computed with
the backend's gradient (`examples/_autodiff.py`) on a fixed batch of 256
training images, once at initialization and once after training.
TensorBoard logs (loss and accuracy per epoch, weight histograms) go under
`--logdir/<arch>/<variant>`; with `--gradboard`,
`keras_gradkit.callbacks.GradientBoard` adds gradient histograms, per-layer
gradient norms and update ratios there, and the recorded norms of the last
step are printed.

    python examples/normalization.py                 # 20-layer tanh MLP, about 3 minutes on 2 cores
    python examples/normalization.py --arch conv --depth 12
    python examples/normalization.py --epochs 5 --gradboard
    tensorboard --logdir runs/normalization
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _autodiff import gradients
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_gradkit

VARIANTS = ("plain", "groupnorm", "cosine", "weightnorm")


def load_data(seed):
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def hidden_block(variant, arch, width, groups, activation):
    """One hidden layer of the chosen variant, as a list of Keras layers."""
    if arch == "mlp":
        if variant == "cosine":
            return [keras_gradkit.layers.CosineDense(width, use_bias=True, activation=activation)]
        layers = [keras.layers.Dense(width)]
    else:
        if variant == "cosine":
            return [
                keras_gradkit.layers.CosineConv2D(
                    width, 3, padding="same", use_bias=True, activation=activation
                )
            ]
        layers = [keras.layers.Conv2D(width, 3, padding="same")]
    if variant == "weightnorm":
        layers = [keras_gradkit.layers.WeightNormalization(layers[0])]
    if variant == "groupnorm":
        layers.append(keras_gradkit.layers.GroupNorm(groups=groups))
    return layers + [keras.layers.Activation(activation)]


def _kernel_of(layer):
    """The layer's kernel (`v` for a WeightNormalization wrapper), or None."""
    if isinstance(layer, keras_gradkit.layers.WeightNormalization):
        return layer.layer.kernel
    return getattr(layer, "kernel", None)


def build_model(variant, args):
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs) if args.arch == "mlp" else inputs
    first_kernel = None
    for _ in range(args.depth):
        for layer in hidden_block(variant, args.arch, args.width, args.groups, args.activation):
            hidden = layer(hidden)
            if first_kernel is None:
                first_kernel = _kernel_of(layer)
    if args.arch == "conv":
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    return keras.Model(inputs, outputs), first_kernel


def first_layer_gradient_norm(model, kernel, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    (grad,) = gradients(lambda: loss_fn(y, model(x, training=True)), [kernel])
    return float(np.linalg.norm(grad))


GRADBOARD_LINES = []


def run_variant(variant, args, data):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(args.seed)
    model, kernel = build_model(variant, args)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    probe_x, probe_y = x_train[:256], y_train[:256]
    grad_init = first_layer_gradient_norm(model, kernel, probe_x, probe_y)
    callbacks = [
        keras.callbacks.TensorBoard(
            os.path.join(args.logdir, args.arch, variant), histogram_freq=max(args.epochs // 5, 1)
        )
    ]
    stats = {}
    if args.gradboard:
        board = keras_gradkit.callbacks.GradientBoard(
            os.path.join(args.logdir, args.arch, variant), histogram_freq=max(args.epochs // 5, 1)
        )
        callbacks.append(board)
        # The latest step's statistics of the plain Adam, read when fit ends.
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_train_end=lambda logs: stats.update(board.gradient_statistics())
            )
        )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=callbacks,
    )
    if args.gradboard:
        kernel_norm = stats[f"gradient_norm/{kernel.path}"]
        GRADBOARD_LINES.append(
            f"GRADBOARD | {variant} | last step: global gradient norm {stats['global_norm']:.3e}, "
            f"first-layer kernel {kernel_norm:.3e} | {int(stats['steps'])} updates logged"
        )
    seconds = time.perf_counter() - start
    grad_final = first_layer_gradient_norm(model, kernel, probe_x, probe_y)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return accuracy, grad_init, grad_final, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    parser.add_argument("--depth", type=int, default=20, help="number of hidden layers")
    parser.add_argument("--width", type=int, default=64, help="units (mlp) or filters (conv)")
    parser.add_argument("--groups", type=int, default=8, help="GroupNorm groups")
    parser.add_argument("--activation", default="tanh", help="tanh or sigmoid")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=os.path.join("runs", "normalization"))
    parser.add_argument(
        "--gradboard",
        action="store_true",
        help="also log gradient histograms and norms with keras_gradkit's GradientBoard",
    )
    args = parser.parse_args(argv)

    data = load_data(args.seed)
    print(
        f"digits: {len(data[0])} train / {len(data[1])} test images; {args.arch}, "
        f"{args.depth} hidden layers of {args.width}, {args.activation}, Adam lr "
        f"{args.learning_rate}, {args.epochs} epochs, batch {args.batch_size}"
    )
    print("| variant | test accuracy | first-layer grad norm at init | after training | train s |")
    print("|---|---|---|---|---|")
    for variant in args.variants:
        accuracy, grad_init, grad_final, seconds = run_variant(variant, args, data)
        print(
            f"| {variant} | {accuracy:.3f} | {grad_init:.2e} | {grad_final:.2e} | {seconds:.0f} |",
            flush=True,
        )
    for line in GRADBOARD_LINES:
        print(line)
    print(f"TensorBoard logs: tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
