"""Depth, measured: plain IndRNN stacks, residual IndRNN and stacked LSTM on sequential digits and the adding problem.

Two tasks:

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, no
  download) read pixel by pixel, a sequence of T = 64 steps with one
  feature, classified from the last step (`Dense(10, softmax)`, cross-entropy,
  test accuracy);
- `adding`: the adding problem of the IndRNN paper at `--seq-len` steps
  (T = 200 by default), two channels (values and markers), the sum of the two
  marked values read from the last step (`Dense(1)`, mean squared error; 1/6
  is what always answering 1 gets). The batches come from
  `examples/adding_problem.py` (`AddingProblem`, `adding_batch`): fresh
  random batches for training, one fixed test set.

Three families, each with N recurrent layers of `--units` units:

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
official IndRNN code does.

For each model the script prints a Markdown row: the test accuracy (digits)
or test MSE (adding), the mean time per epoch (first epoch, which traces the
graph, excluded when there are several), and the ratio of gradient norms
across depth at initialization and after training, on a fixed training
batch: the L2 norm of the gradient of the loss with respect to all trainable
variables of the first layer that has any, divided by the same for the last
one (the head). A residual block counts as one layer. This is the quantity
`GradientBoard` logs as `gradient_depth/first_to_last` (there on the applied,
clipped gradient of the epoch's last batch; a global clip scales every layer
alike and leaves the ratio unchanged). Gradients come from
`keras_gradkit._gradients`, the package's one place for gradients on every
backend. `keras_gradkit.callbacks.GradientBoard` writes its logs, the
gradient across depth included, under `--logdir/<task>/<model>_N<depth>`
(`--no-gradboard` turns it off); the last column is its last
`gradient_depth/first_to_last`, read back with TensorBoard's reader.
`--figure PNG` draws `gradient_depth/norms` of the deepest plain and
residual stacks (and the LSTM stack) from those logs, one panel per task;
with `--figure-only` nothing runs and it only draws from existing logs.

    python examples/deep_rnn.py --smoke                   # seconds: what the test runs
    python examples/deep_rnn.py --quick                   # N = 2, one short epoch per task
    python examples/deep_rnn.py --depths 2 6 12 24 --figure depth.png
    python examples/deep_rnn.py --depths 24 --figure-only --figure depth.png
    tensorboard --logdir runs/deep_rnn
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from adding_problem import BASELINE_MSE, AddingProblem, adding_batch

import keras_gradkit
from keras_gradkit._gradients import value_and_gradients

MODELS = ("plain", "residual", "lstm")
TASKS = ("digits", "adding")
MODEL_NAMES = {"plain": "plain IndRNN", "residual": "residual IndRNN", "lstm": "LSTM"}
DIGITS_TIMESTEPS = 64
# Keras's default 0.99 leaves the moving variance near its initial 1 after a
# few hundred steps (0.99 ** 200 = 0.13), far from the true variance, and
# inference then fails while training accuracy looks fine.
BATCH_NORM_MOMENTUM = 0.9
DEPTH_TAGS = ("gradient_depth", "gradient_depth/norms", "gradient_depth/first_to_last")


class Task:
    """What differs between the tasks: data, input, head, loss and metric."""

    def __init__(
        self, name, timesteps, features, head, loss, metric, train, test, steps_per_epoch=None
    ):
        self.name, self.timesteps, self.features = name, timesteps, features
        self.head, self.loss, self.metric = head, loss, metric
        self.train, self.test, self.steps_per_epoch = train, test, steps_per_epoch


def digits_task(seed, limit=None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32").reshape(-1, DIGITS_TIMESTEPS, 1)
    y = digits.target.astype("int32")
    if limit:
        x, y = x[:limit], y[:limit]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return Task(
        "digits",
        DIGITS_TIMESTEPS,
        1,
        lambda: keras.layers.Dense(10, activation="softmax", name="head"),
        "sparse_categorical_crossentropy",
        "accuracy",
        (x_train, y_train),
        (x_test, y_test),
    )


def adding_task(seed, seq_len, batch_size, steps_per_epoch, epochs, test_size):
    train = AddingProblem(batch_size, seq_len, steps_per_epoch * max(epochs, 1), seed)
    test = adding_batch(np.random.default_rng([seed, 10**9]), test_size, seq_len)
    return Task(
        "adding",
        seq_len,
        2,
        lambda: keras.layers.Dense(1, name="head"),
        "mse",
        "mse",
        train,
        test,
        steps_per_epoch,
    )


def _last_recurrent_initializer(timesteps):
    return keras.initializers.RandomUniform(0.5 ** (1 / timesteps), 2 ** (1 / timesteps))


def recurrent_stack(kind, depth, units, timesteps):
    """The hidden layers of one model, input `(batch, T, features)` to `(batch, units)`."""
    if kind == "lstm":
        return [keras.layers.LSTM(units, return_sequences=i < depth - 1) for i in range(depth)]
    if kind == "plain":
        return [
            keras_gradkit.layers.IndRNN(
                units,
                timesteps=timesteps,
                return_sequences=i < depth - 1,
                recurrent_initializer=_last_recurrent_initializer(timesteps)
                if i == depth - 1
                else None,
            )
            for i in range(depth)
        ]
    if depth % 2:
        raise ValueError(
            f"A residual stack has two recurrences per block: `depth` must be even. Received: {depth}"
        )
    blocks = [keras.layers.Dense(units, name="input_weight")]
    for i in range(depth // 2):
        last = i == depth // 2 - 1
        blocks.append(
            keras_gradkit.layers.ResidualIndRNN(
                units,
                timesteps=timesteps,
                momentum=BATCH_NORM_MOMENTUM,
                recurrent_initializer=_last_recurrent_initializer(timesteps) if last else None,
            )
        )
    # Pre-activation blocks leave the residual stream unnormalized: normalize
    # the step that is read out, as pre-activation ResNets end with BN.
    return blocks + [
        keras.layers.Lambda(lambda h: h[:, -1], name="last_step"),
        keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name="output_batch_norm"),
    ]


def build_model(kind, depth, units, task):
    inputs = keras.Input((task.timesteps, task.features))
    hidden = inputs
    for layer in recurrent_stack(kind, depth, units, task.timesteps):
        hidden = layer(hidden)
    outputs = task.head()(hidden)
    return keras.Model(inputs, outputs, name=f"{task.name}_{kind}_N{depth}")


def layer_gradient_norms(model, loss, x, y):
    """L2 norm of the gradient of each layer's trainable variables together,
    for the model's layers with trainable variables, in order (on a training
    call, moving statistics untouched)."""
    layers = [layer for layer in model.layers if layer.trainable_weights]
    variables = [v for layer in layers for v in layer.trainable_weights]
    loss_fn = keras.losses.get(loss)
    if keras.backend.backend() == "jax":
        grads = _jax_gradients(model, loss_fn, x, y, variables)
    else:
        _, _, grads = value_and_gradients(
            lambda: keras.ops.mean(loss_fn(y, model(x, training=True))), (), variables
        )
    norms, start = [], 0
    for layer in layers:
        count = len(layer.trainable_weights)
        norms.append(
            float(
                np.sqrt(
                    sum(
                        np.sum(np.square(np.asarray(g, "float64")))
                        for g in grads[start : start + count]
                    )
                )
            )
        )
        start += count
    return norms


def _jax_gradients(model, loss_fn, x, y, variables):
    """The same gradient with one jitted `jax.grad` of `model.stateless_call`,
    kept on the model: eager JAX dispatches every step of every scan and costs
    seconds per call."""
    import jax

    if getattr(model, "_depth_probe", None) is None:

        def loss(trainable, non_trainable, x, y):
            y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return keras.ops.mean(loss_fn(y, y_pred))

        model._depth_probe = jax.jit(jax.grad(loss))
    grads = model._depth_probe(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        x,
        y,
    )
    by_path = {v.path: g for v, g in zip(model.trainable_variables, grads)}
    return [by_path[v.path] for v in variables]


def first_to_last(norms):
    """First norm over last, as GradientBoard's `gradient_depth/first_to_last`:
    NaN for 0 / 0 (a saturated softmax or a dead ReLU stack has no gradient)."""
    if norms[-1] == 0:
        return float("nan") if norms[0] == 0 else float("inf")
    return norms[0] / norms[-1]


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def read_depth_logs(run_dir):
    """`{tag: [(step, numpy value), ...]}` of the gradient-depth tags GradientBoard
    wrote under `run_dir`, read back with TensorBoard's reader."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(os.path.join(run_dir, "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {
        tag: [
            (event.step, tensor_util.make_ndarray(event.tensor_proto)) for event in acc.Tensors(tag)
        ]
        for tag in acc.Tags()["tensors"]
        if tag in DEPTH_TAGS
    }


def run_model(kind, depth, args, task):
    keras.utils.set_random_seed(args.seed)
    model = build_model(kind, depth, args.units, task)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=10.0),
        loss=task.loss,
        metrics=[task.metric],
        run_eagerly=args.run_eagerly,
    )
    if task.steps_per_epoch:  # adding: a fixed probe batch drawn apart from training and test
        probe_x, probe_y = adding_batch(
            np.random.default_rng([args.seed, 10**9 + 1]), args.batch_size, task.timesteps
        )
        fit_args = dict(
            x=task.train, steps_per_epoch=task.steps_per_epoch, epochs=args.adding_epochs
        )
    else:
        probe_x, probe_y = task.train[0][: args.batch_size], task.train[1][: args.batch_size]
        fit_args = dict(
            x=task.train[0], y=task.train[1], batch_size=args.batch_size, epochs=args.epochs
        )
    norms_init = layer_gradient_norms(model, task.loss, probe_x, probe_y)
    timer = EpochTimer()
    callbacks = [timer]
    run_dir = os.path.join(args.logdir, task.name, f"{kind}_N{depth}")
    if args.gradboard:
        callbacks.append(keras_gradkit.callbacks.GradientBoard(run_dir, histogram_freq=1))
    if fit_args["epochs"] > 0:
        model.fit(**fit_args, verbose=0, callbacks=callbacks)
    norms_final = layer_gradient_norms(model, task.loss, probe_x, probe_y)
    _, metric = model.evaluate(*task.test, batch_size=256, verbose=0)
    epoch_seconds = getattr(timer, "seconds", [])
    epoch_seconds = epoch_seconds[1:] or epoch_seconds or [float("nan")]
    logged = float("nan")
    if args.gradboard and fit_args["epochs"] > 0:
        logged = float(read_depth_logs(run_dir)["gradient_depth/first_to_last"][-1][1])
    return {
        "metric": float(metric),
        "epoch_seconds": float(np.mean(epoch_seconds)),
        "ratio_init": first_to_last(norms_init),
        "ratio_final": first_to_last(norms_final),
        "ratio_logged": logged,
        "norms_init": norms_init,
        "norms_final": norms_final,
        "run_dir": run_dir,
    }


def plot_depth_figure(logdir, tasks, depth, path, models=MODELS):
    """Draws `gradient_depth/norms` (first and last logged epoch) of the
    `depth`-layer stacks of each task, one panel per task, into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"plain": "tab:red", "residual": "tab:blue", "lstm": "tab:gray"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for kind in models:
            run_dir = os.path.join(logdir, task, f"{kind}_N{depth}")
            if not os.path.isdir(os.path.join(run_dir, "train")):
                continue
            events = read_depth_logs(run_dir).get("gradient_depth/norms")
            if not events:
                continue
            for (_, norms), style, alpha, when in (
                (events[0], "--", 0.55, "first epoch"),
                (events[-1], "-", 1.0, f"epoch {events[-1][0] + 1}"),
            ):
                norms = np.asarray(norms, "float64")
                layer = np.arange(1, norms.size + 1)
                ax.semilogy(
                    layer,
                    np.where(norms > 0, norms, np.nan),
                    style,
                    marker="o",
                    ms=3,
                    lw=1.3,
                    color=colors[kind],
                    alpha=alpha,
                    label=f"{MODEL_NAMES[kind]}, {when} (first/last {first_to_last(norms):.2g})",
                )
                if len(events) == 1:
                    break
        ax.set_title(f"{task}: N = {depth} recurrent layers")
        ax.set_xlabel("layer with weights (1 = first, last = head)")
        ax.set_ylabel("|applied gradient| of the layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Gradient across depth (GradientBoard's gradient_depth/norms)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[2, 6, 12, 24],
        help="numbers of recurrent layers N (even, for the residual model)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs", type=int, default=10, help="digits epochs; 0: only the ratio at initialization"
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="digits: use only the first SAMPLES images"
    )
    parser.add_argument("--seq-len", type=int, default=200, help="adding: sequence length T")
    parser.add_argument(
        "--adding-epochs", type=int, default=5, help="adding: epochs of fresh batches; 0: none"
    )
    parser.add_argument("--adding-steps", type=int, default=50, help="adding: batches per epoch")
    parser.add_argument("--adding-test", type=int, default=500, help="adding: test sequences")
    parser.add_argument(
        "--run-eagerly",
        action="store_true",
        help="compile with run_eagerly=True (no graph tracing: faster for a few tiny batches)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds (the test): N = 2, 4 units, 1 epoch of 3 batches of 16 (60 images; "
        "adding T = 12), eager on TensorFlow",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N = 2, 8 units, 1 epoch, 200 images, adding T = 200, 10 batches",
    )
    parser.add_argument("--logdir", default=os.path.join("runs", "deep_rnn"))
    parser.add_argument(
        "--gradboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log gradients with keras_gradkit.callbacks.GradientBoard (default on)",
    )
    parser.add_argument(
        "--figure",
        default=None,
        metavar="PNG",
        help="draw the gradient across depth of the deepest stacks from the logs into PNG",
    )
    parser.add_argument(
        "--figure-only",
        action="store_true",
        help="with --figure: run nothing, draw from the logs already in --logdir",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        # Batches of one size only (48 train / 12 test images): JAX compiles once per shape.
        args.depths, args.units, args.epochs, args.samples = [2], 4, 1, 60
        args.batch_size, args.seq_len, args.adding_epochs, args.adding_steps, args.adding_test = (
            16,
            12,
            1,
            3,
            16,
        )
        # Tracing a recurrent train step costs TensorFlow seconds; three eager batches cost less.
        args.run_eagerly = args.run_eagerly or keras.backend.backend() == "tensorflow"
    elif args.quick:
        args.depths, args.units, args.epochs, args.samples = [2], 8, 1, 200
        args.adding_epochs, args.adding_steps, args.adding_test = 1, 10, 128
    return args


def main(argv=None):
    args = parse_args(argv)
    results = {}
    for name in [] if args.figure_only else args.tasks:
        if name == "digits":
            task = digits_task(args.seed, args.samples)
            print(
                f"sequential digits: {len(task.train[0])} train / {len(task.test[0])} test sequences of "
                f"{task.timesteps} pixels; {args.epochs} epochs of batch {args.batch_size}",
                flush=True,
            )
            metric_name = "test accuracy"
        else:
            task = adding_task(
                args.seed,
                args.seq_len,
                args.batch_size,
                args.adding_steps,
                args.adding_epochs,
                args.adding_test,
            )
            print(
                f"adding problem, T = {args.seq_len}: {args.adding_epochs} epochs of {args.adding_steps} fresh "
                f"batches of {args.batch_size}, {args.adding_test} test sequences "
                f"(baseline MSE {BASELINE_MSE:.3f})",
                flush=True,
            )
            metric_name = "test MSE"
        print(
            f"{args.units} units, Adam lr {args.learning_rate}, global_clipnorm 10, seed {args.seed}, "
            f"backend {keras.backend.backend()}"
        )
        print(
            f"| task | model | N | {metric_name} | s / epoch | first/last at init | after training "
            f"| GradientBoard first/last, last epoch |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for depth in args.depths:
            for kind in args.models:
                r = run_model(kind, depth, args, task)
                results[(name, kind, depth)] = r
                print(
                    f"| {name} | {MODEL_NAMES[kind]} | {depth} | {r['metric']:.4g} | {r['epoch_seconds']:.2f} | "
                    f"{r['ratio_init']:.3g} | {r['ratio_final']:.3g} | {r['ratio_logged']:.3g} |",
                    flush=True,
                )
    if args.gradboard and not args.figure_only:
        print(f"GradientBoard logs: tensorboard --logdir {args.logdir}")
    if args.figure:
        plot_depth_figure(args.logdir, args.tasks, max(args.depths), args.figure, args.models)
    return results


if __name__ == "__main__":
    main()
