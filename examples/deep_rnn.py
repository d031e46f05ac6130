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

Three families, each with N recurrent layers of `--units` units, built and
trained in one of two setups (`--setup`).

`--setup official` (the default) follows the deep IndRNN code of the
paper's authors (`Sunnydreamrain/IndRNN_pytorch`, `pixelMNIST/`: the
residual and plain networks of `Indrnn_residualnet_preact.py` and
`Indrnn_plainnet.py`, the training of `Indrnn_mnist_train.py`, the defaults of
`opts.py` and `run_residual.sh`), at this script's own depths and widths:

- `residual`: an input weight `Dense(units)`, N / 2
  `keras_gradkit.layers.ResidualIndRNN` blocks (`batch_norm="after"`, the
  official default: recurrence, BN, dropout, weight, twice, plus the
  shortcut), then one more layer as the official network ends: a recurrence
  without input weight, BN over batch and time, dropout; the last step goes
  to the head. So N + 1 recurrent layers;
- `plain`: N layers of weight + recurrence (`keras_gradkit.layers.IndRNN`),
  BN over batch and time, dropout (the official plain network: BN after
  every recurrence, no shortcut);
- `lstm`: N `keras.layers.LSTM` layers, as in the previous setup (the
  official code has no deep LSTM); it shares the training settings below.

Recurrent weights start in U(0, MAG^(1/T)) and are kept within
+-MAG^(1/T) (`recurrent_max_abs`); only the last recurrent layer starts in
U(MAG^(-1/T), MAG^(1/T)) (`--u_lastlayer_ini`). MAG is 5 on digits (the
sequential-MNIST `opts.py`) and 2 on the adding problem (the official
adding-problem code, in Theano); `--mag` overrides both. Input weights and
the weights inside the blocks start as PyTorch's `kaiming_uniform_(a=8)`
(`VarianceScaling(2 / 65, "fan_in", "uniform")`), the head as
`kaiming_normal_`; biases at 0. Batch normalization uses PyTorch's
momentum 0.1 and epsilon 1e-5 (Keras's `momentum=0.9`, `epsilon=1e-5`);
dropout 0.1 with one mask per sequence. Training: Adam at 2e-4, batch 32,
each gradient element clipped to +-10 (`clipvalue=10`, the official
`gradclipvalue`), the learning rate x0.1 when the epoch's training loss
stops improving (`ReduceLROnPlateau(factor=0.1, patience=--lr-patience)`;
the official code watches the accuracy on a held-out evaluation set every
100 batches, with a patience of 100 evaluations, and restores its best
weights when it reduces), and weight decay 1e-4 on the weights (input,
block, recurrent-layer and head kernels; not the recurrent weights, not the
biases). How that decay differs: PyTorch's `Adam(weight_decay=1e-4)` adds
1e-4 * w to each gradient inside the optimizer, after the per-element clip;
here `kernel_regularizer=keras.regularizers.L2(5e-5)` adds the same 1e-4 * w
through the loss, so before the clip (the two differ only on clipped
elements, by at most 1e-4 * |w|), and the reported training loss includes
the penalty. Keras's AdamW (`weight_decay`) would be further off: it decays
the weights directly, outside Adam's moments. The official code also decays
the BN scales (PyTorch calls them `weight`); `ResidualIndRNN` has no
regularizer for its BN scales, so no BN scale is decayed here.

`--setup previous` is the setup of this script's earlier tables: plain
IndRNN stacks without normalization; residual blocks with
`batch_norm="before"` and BN of the last step before the head; recurrent
weights bounded by 2^(1/T), the last layer starting in
[0.5^(1/T), 2^(1/T)]; Keras's default initializers, no dropout, no weight
decay; Adam at 1e-3 with `global_clipnorm=10`, batch 64, 10 digits epochs;
Keras's BN momentum 0.9 and epsilon 1e-3. Its residual rows came from the
earlier four-matrix block (each recurrence with an input kernel of its own),
which `.keras` files still load as saved but which a new block no longer
builds: the residual family here uses today's two-matrix block with
`batch_norm="before"`. Neither setup's clipping is global-norm clipping as
the official code's: the official PyTorch code clips each gradient element
to +-10, and the official Theano adding-problem code clips the gradient
inside the recurrence (Lasagne's `grad_clipping=10`, this package's
`IndRNN(grad_clipping=10)`).

For each model the script prints a Markdown row: the test accuracy (digits)
or test MSE (adding), the mean time per epoch (first epoch, which traces the
graph, excluded when there are several), and the ratio of gradient norms
across depth at initialization and after training, on a fixed training
batch: the L2 norm of the gradient of the loss (without the weight-decay
penalty) with respect to all trainable variables of the first layer that
has any, divided by the same for the last one (the head). A residual block
counts as one layer, and so does each recurrent layer of the official setup
with its BN (a nested `keras.Sequential`). The probe is a training call: in
the official setup it draws dropout masks. This is the quantity
`GradientBoard` logs as `gradient_depth/first_to_last` (there on the applied
gradient of the epoch's last batch; a global-norm clip scales every layer
alike and leaves the ratio unchanged, the official per-element clip does
not). Gradients come from `examples/_autodiff.py` (on JAX, one jitted
`jax.grad` of the model's stateless call). `keras_gradkit.callbacks.GradientBoard`
writes its logs, the gradient across depth included, under
`--logdir/<task>/<model>_N<depth>` (`--no-gradboard` turns it off); the last
column is its last `gradient_depth/first_to_last`, read back with
TensorBoard's reader. `--figure PNG` draws `gradient_depth/norms` of the
deepest plain and residual stacks (and the LSTM stack) from those logs, one
panel per task; with `--figure-only` nothing runs and it only draws from
existing logs.

    python examples/deep_rnn.py --smoke                   # seconds: what the test runs
    python examples/deep_rnn.py --quick                   # N = 2, one short epoch per task
    python examples/deep_rnn.py --depths 2 6 12 24 --figure depth.png
    python examples/deep_rnn.py --setup previous --depths 2 24
    python examples/deep_rnn.py --depths 24 --figure-only --figure depth.png
    tensorboard --logdir runs/deep_rnn
"""

import argparse
import os
import time
from typing import NamedTuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _autodiff import gradients
from adding_problem import BASELINE_MSE, AddingProblem, adding_batch

import keras_gradkit

MODELS = ("plain", "residual", "lstm")
TASKS = ("digits", "adding")
MODEL_NAMES = {"plain": "plain IndRNN", "residual": "residual IndRNN", "lstm": "LSTM"}
DIGITS_TIMESTEPS = 64
DEPTH_TAGS = ("gradient_depth", "gradient_depth/norms", "gradient_depth/first_to_last")


class Setup(NamedTuple):
    """What a setup fixes: training defaults, normalization and regularization."""

    name: str
    batch_size: int
    learning_rate: float
    digits_epochs: int
    mag: dict  # by task: the recurrent bound is mag ** (1 / T)
    batch_norm_momentum: float
    batch_norm_epsilon: float
    dropout: float
    weight_decay: float
    description: str


SETUPS = {
    # Sunnydreamrain/IndRNN_pytorch, pixelMNIST: opts.py, run_residual.sh, run.sh.
    "official": Setup(
        "official",
        batch_size=32,
        learning_rate=2e-4,
        digits_epochs=5,  # 5 * 45 = 225 steps at batch 32, the previous 10 * 23 = 230 at 64
        mag={"digits": 5.0, "adding": 2.0},
        batch_norm_momentum=0.9,  # PyTorch's momentum=0.1
        batch_norm_epsilon=1e-5,
        dropout=0.1,
        weight_decay=1e-4,
        description="official IndRNN setup: Adam, clipvalue 10 (per element), weight decay 1e-4, "
        "BN momentum 0.9 / epsilon 1e-5, dropout 0.1, lr x0.1 on plateau",
    ),
    # Keras's default 0.99 leaves the moving variance near its initial 1 after a
    # few hundred steps (0.99 ** 200 = 0.13), far from the true variance, and
    # inference then fails while training accuracy looks fine.
    "previous": Setup(
        "previous",
        batch_size=64,
        learning_rate=1e-3,
        digits_epochs=10,
        mag={"digits": 2.0, "adding": 2.0},
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-3,
        dropout=0.0,
        weight_decay=0.0,
        description="previous setup: Adam, global_clipnorm 10, no weight decay, "
        "BN momentum 0.9 / epsilon 1e-3, no dropout",
    ),
}


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
        lambda **kwargs: keras.layers.Dense(10, activation="softmax", name="head", **kwargs),
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
        lambda **kwargs: keras.layers.Dense(1, name="head", **kwargs),
        "mse",
        "mse",
        train,
        test,
        steps_per_epoch,
    )


def _last_step():
    return keras.layers.Lambda(lambda h: h[:, -1], name="last_step")


def _weight_initializer():
    """PyTorch's `kaiming_uniform_(a=8, mode="fan_in")`: U(+-sqrt(6 / (65 fan_in))).
    Seeded by a seed generator, which draws anew at each call, so one
    instance may fill several weights (a `ResidualIndRNN` uses it for both of
    its weights)."""
    return keras.initializers.VarianceScaling(
        2 / 65, "fan_in", "uniform", seed=keras.random.SeedGenerator()
    )


def _weight_decay(setup):
    """PyTorch's `Adam(weight_decay=d)` adds `d * w` to the gradient; L2(d / 2)
    adds the same through the loss (before the clip, not after it)."""
    return keras.regularizers.L2(setup.weight_decay / 2) if setup.weight_decay else None


def _previous_last_initializer(timesteps):
    return keras.initializers.RandomUniform(0.5 ** (1 / timesteps), 2 ** (1 / timesteps))


def _previous_stack(kind, depth, units, timesteps, setup):
    """The hidden layers of the previous setup (each initializer created where
    the earlier script created it: creating one draws a seed, so the order
    decides the initial weights)."""
    if kind == "plain":
        return [
            keras_gradkit.layers.IndRNN(
                units,
                timesteps=timesteps,
                return_sequences=i < depth - 1,
                recurrent_initializer=_previous_last_initializer(timesteps)
                if i == depth - 1
                else None,
            )
            for i in range(depth)
        ]
    blocks = [keras.layers.Dense(units, name="input_weight")]
    for i in range(depth // 2):
        last = i == depth // 2 - 1
        blocks.append(
            keras_gradkit.layers.ResidualIndRNN(
                units,
                timesteps=timesteps,
                batch_norm="before",
                momentum=setup.batch_norm_momentum,
                recurrent_initializer=_previous_last_initializer(timesteps) if last else None,
            )
        )
    # Pre-activation blocks leave the residual stream unnormalized: normalize
    # the step that is read out, as pre-activation ResNets end with BN.
    return blocks + [
        _last_step(),
        keras.layers.BatchNormalization(
            momentum=setup.batch_norm_momentum, name="output_batch_norm"
        ),
    ]


def _official_layer(units, timesteps, mag, last, setup, name, use_kernel=True):
    """One recurrent layer of the official networks: [weight +] recurrence, BN
    over batch and time, dropout with one mask per sequence. A nested
    `keras.Sequential`, so GradientBoard counts it as one layer."""
    bound = mag ** (1 / timesteps)
    low = 1 / bound if last else 0.0
    if use_kernel:
        projection = dict(
            kernel_initializer=_weight_initializer(), kernel_regularizer=_weight_decay(setup)
        )
    else:
        projection = dict(use_kernel=False, use_bias=False)
    return keras.Sequential(
        [
            keras_gradkit.layers.IndRNN(
                units,
                recurrent_initializer=keras.initializers.RandomUniform(low, bound),
                recurrent_max_abs=bound,
                return_sequences=True,
                **projection,
            ),
            keras.layers.BatchNormalization(
                momentum=setup.batch_norm_momentum, epsilon=setup.batch_norm_epsilon
            ),
            keras.layers.Dropout(setup.dropout, noise_shape=(None, 1, units)),
        ],
        name=name,
    )


def _official_stack(kind, depth, units, timesteps, setup, mag):
    """The hidden layers of the official setup."""
    if kind == "plain":
        layers = [
            _official_layer(units, timesteps, mag, i == depth - 1, setup, f"ind_rnn_bn_{i + 1}")
            for i in range(depth)
        ]
        return layers + [_last_step()]
    bound = mag ** (1 / timesteps)
    layers = [
        keras.layers.Dense(
            units,
            kernel_initializer=_weight_initializer(),
            kernel_regularizer=_weight_decay(setup),
            name="input_weight",
        )
    ]
    for _ in range(depth // 2):
        layers.append(
            keras_gradkit.layers.ResidualIndRNN(
                units,
                kernel_initializer=_weight_initializer(),
                recurrent_max_abs=bound,
                kernel_regularizer=_weight_decay(setup),
                dropout=setup.dropout,
                batch_norm="after",
                momentum=setup.batch_norm_momentum,
                epsilon=setup.batch_norm_epsilon,
            )
        )
    # The official network ends with one more recurrence (no weight before
    # it: it reads the residual stream) and BN, the only layer that starts
    # with the long-memory initialization.
    last = _official_layer(units, timesteps, mag, True, setup, "last_ind_rnn_bn", use_kernel=False)
    return layers + [last, _last_step()]


def recurrent_stack(kind, depth, units, timesteps, setup="official", mag=2.0):
    """The hidden layers of one model, input `(batch, T, features)` to `(batch, units)`.
    `mag`: the recurrent bound is `mag ** (1 / T)` in the official setup
    (`build_model` takes the task's)."""
    setup = SETUPS[setup]
    if kind == "lstm":
        return [
            keras.layers.LSTM(
                units, return_sequences=i < depth - 1, kernel_regularizer=_weight_decay(setup)
            )
            for i in range(depth)
        ]
    if kind == "residual" and depth % 2:
        raise ValueError(
            f"A residual stack has two recurrences per block: `depth` must be even. Received: {depth}"
        )
    if setup.name == "previous":
        return _previous_stack(kind, depth, units, timesteps, setup)
    return _official_stack(kind, depth, units, timesteps, setup, mag)


def build_model(kind, depth, units, task, setup="official", mag=None):
    mag = SETUPS[setup].mag[task.name] if mag is None else mag
    inputs = keras.Input((task.timesteps, task.features))
    hidden = inputs
    for layer in recurrent_stack(kind, depth, units, task.timesteps, setup, mag):
        hidden = layer(hidden)
    head = {}
    if setup == "official":  # PyTorch's kaiming_normal_ (not truncated), decayed
        head = dict(
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, "fan_in", "untruncated_normal"
            ),
            kernel_regularizer=_weight_decay(SETUPS[setup]),
        )
    outputs = task.head(**head)(hidden)
    return keras.Model(inputs, outputs, name=f"{task.name}_{kind}_N{depth}")


def make_optimizer(setup, learning_rate):
    if setup == "official":
        # The official `clip_gradient` clamps every gradient element to +-10.
        return keras.optimizers.Adam(learning_rate, clipvalue=10.0)
    return keras.optimizers.Adam(learning_rate, global_clipnorm=10.0)


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
        grads = gradients(lambda: keras.ops.mean(loss_fn(y, model(x, training=True))), variables)
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


def _fit_arguments(args, task):
    """The probe batch and the `fit` arguments of a task."""
    if task.steps_per_epoch:  # adding: a fixed probe batch drawn apart from training and test
        probe = adding_batch(
            np.random.default_rng([args.seed, 10**9 + 1]), args.batch_size, task.timesteps
        )
        return probe, dict(
            x=task.train, steps_per_epoch=task.steps_per_epoch, epochs=args.adding_epochs
        )
    probe = task.train[0][: args.batch_size], task.train[1][: args.batch_size]
    return probe, dict(
        x=task.train[0], y=task.train[1], batch_size=args.batch_size, epochs=args.epochs
    )


def run_model(kind, depth, args, task):
    keras.utils.set_random_seed(args.seed)
    model = build_model(kind, depth, args.units, task, args.setup, args.mag)
    model.compile(
        optimizer=make_optimizer(args.setup, args.learning_rate),
        loss=task.loss,
        metrics=[task.metric],
        run_eagerly=args.run_eagerly,
    )
    (probe_x, probe_y), fit_args = _fit_arguments(args, task)
    norms_init = layer_gradient_norms(model, task.loss, probe_x, probe_y)
    timer = EpochTimer()
    callbacks = [timer]
    if args.setup == "official":
        # The official code divides the learning rate by 10 when its held-out
        # accuracy stops improving; the test set stays out of training here.
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=args.lr_patience)
        )
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
        "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
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
    parser.add_argument(
        "--setup",
        default="official",
        choices=tuple(SETUPS),
        help="official: the deep IndRNN code of the paper's authors (default); "
        "previous: the setup of the earlier tables",
    )
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
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 32 (official), 64 (previous)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="default: 2e-4 (official), 1e-3 (previous)",
    )
    parser.add_argument(
        "--mag",
        type=float,
        default=None,
        help="recurrent bound MAG ** (1 / T); default: official 5 (digits) and 2 (adding), "
        "previous 2",
    )
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=3,
        help="official: epochs without a lower training loss before the learning rate x0.1",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="digits epochs, default: 5 (official, batch 32), 10 (previous, batch 64), about "
        "230 steps both; 0: only the ratio at initialization",
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
    setup = SETUPS[args.setup]
    if args.batch_size is None:
        args.batch_size = setup.batch_size
    if args.learning_rate is None:
        args.learning_rate = setup.learning_rate
    if args.epochs is None:
        args.epochs = setup.digits_epochs
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


def _print_table_header(args, name, metric_name):
    setup = SETUPS[args.setup]
    mag = setup.mag[name] if args.mag is None else args.mag
    print(
        f"{args.units} units, {setup.description}, Adam lr {args.learning_rate}, "
        f"MAG {mag:g}, seed {args.seed}, backend {keras.backend.backend()}"
    )
    print(
        f"| task | model | N | {metric_name} | s / epoch | first/last at init | after training "
        f"| GradientBoard first/last, last epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")


def _make_task(name, args):
    if name == "digits":
        task = digits_task(args.seed, args.samples)
        steps = -(-len(task.train[0]) // args.batch_size) * args.epochs
        print(
            f"sequential digits: {len(task.train[0])} train / {len(task.test[0])} test sequences of "
            f"{task.timesteps} pixels; {args.epochs} epochs of batch {args.batch_size} "
            f"({steps} steps)",
            flush=True,
        )
        return task, "test accuracy"
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
    return task, "test MSE"


def main(argv=None):
    args = parse_args(argv)
    results = {}
    for name in [] if args.figure_only else args.tasks:
        task, metric_name = _make_task(name, args)
        _print_table_header(args, name, metric_name)
        for depth in args.depths:
            for kind in args.models:
                r = run_model(kind, depth, args, task)
                results[(name, kind, depth)] = r
                print(
                    f"| {name} | {MODEL_NAMES[kind]} | {depth} | {r['metric']:.4g} | {r['epoch_seconds']:.2f} | "
                    f"{r['ratio_init']:.3g} | {r['ratio_final']:.3g} | {r['ratio_logged']:.3g} |",
                    flush=True,
                )
                if not np.isclose(r["learning_rate"], args.learning_rate):
                    print(
                        f"  ({MODEL_NAMES[kind]}, N = {depth}: learning rate now {r['learning_rate']:.3g})"
                    )
    if args.gradboard and not args.figure_only:
        print(f"GradientBoard logs: tensorboard --logdir {args.logdir}")
    if args.figure:
        plot_depth_figure(args.logdir, args.tasks, max(args.depths), args.figure, args.models)
    return results


if __name__ == "__main__":
    main()
