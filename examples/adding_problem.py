"""The adding problem of the IndRNN paper: IndRNN against LSTM, SimpleRNN and
the recurrent layers for long sequences (MUT1-3, minGRU, minLSTM, LRU).

Each input has two channels of length T: values drawn from U(0, 1), and a
marker channel that is 1 at two positions (one in each half of the sequence)
and 0 elsewhere. The target is the sum of the two marked values; the loss is
the mean squared error. Always predicting 1 gives MSE 1/6 (about 0.167), the
baseline a model must beat to have learned anything.

    python examples/adding_problem.py --model indrnn --seq-len 500 --steps 3000
    python examples/adding_problem.py --demo            # what `make demo` runs
    python examples/adding_problem.py --model lstm --seq-len 500 --steps 200 --gradboard
    python examples/adding_problem.py --model mingru --seq-len 1000 --steps 300 --reach

With `--gradboard`, `keras_gradkit.callbacks.GradientBoard` also writes
gradient histograms, norms, clipping statistics and the gradient of the loss
with respect to each time step (on a probe batch of validation sequences) to
the same log directory, and the time-gradient reach is printed at the end;
`--time-gradient-png FILE` saves the last time-gradient plot as a PNG.
With `--reach`, `keras_gradkit.diagnose` measures on the probe batch how many
steps back from the last one the gradient of the loss arrives (its reach,
out of T), at initialization and after training, and both are printed.

`--model mut1`, `mut2`, `mut3` stack `keras_gradkit.layers.MUT1` ... `MUT3`
(Jozefowicz et al. 2015), `mingru` and `minlstm` stack `MinGRU` and
`MinLSTM` (Feng et al. 2024), and `lru` is `Dense(units, relu)` (a linear
recurrence alone cannot multiply a value by its marker) then `LRU` layers
(Orvieto et al. 2023) with the paper's long-range ring, |λ| in [0.9, 0.999]
and phases up to π/10, joined by `Dense(units, gelu)`; one layer each by
default. The table of the guide "Recurrent layers for long sequences"
(docs/guides/long_sequences.md) was measured with this script, `--reach`, on
a reduced budget it states.

Hyperparameters follow the paper and its official adding-problem code
(`Sunnydreamrain/IndRNN_Theano_Lasagne`, `adding/adding.py`) where they are
known: 128 units, 2 IndRNN layers (1 for the others), Adam with learning rate
2e-4 for ReLU IndRNN and 2e-3 for LSTM / tanh SimpleRNN, batch 32, input
weights N(0, 0.001), recurrent weights of the last IndRNN layer
U((1/2)^(1/T), 2^(1/T)), all bounded by 2^(1/T).

Clipping (`--clipping`): the official code clips with Lasagne's
`grad_clipping=10`, inside the recurrence: during backpropagation through
time the gradient with respect to each step's pre-activation is clipped
elementwise to [-10, 10]. `--clipping official` (the default) does that for
IndRNN with `IndRNN(..., grad_clipping=10)` and clips nothing else; Keras's
LSTM and SimpleRNN have no such option, so they keep the global-norm clip
at 10 of `--clipping global-norm` (`ClippedOptimizer(...,
ClipByGlobalNorm(10.0))`), which is what every model used before. TensorBoard
logs go to `--logdir`; validation MSE is printed as training goes.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_gradkit as gk

BASELINE_MSE = 1.0 / 6.0
DEFAULT_LR = {
    "indrnn": 2e-4,
    "lstm": 2e-3,
    "simplernn": 2e-3,
    "mut1": 2e-3,
    "mut2": 2e-3,
    "mut3": 2e-3,
    "mingru": 2e-3,
    "minlstm": 2e-3,
    "lru": 1e-3,
}
MODELS = tuple(DEFAULT_LR)


def adding_batch(rng, batch_size, seq_len):
    """One batch of the adding problem: inputs `(batch, T, 2)`, targets `(batch, 1)`."""
    values = rng.uniform(0.0, 1.0, size=(batch_size, seq_len))
    markers = np.zeros((batch_size, seq_len))
    half = seq_len // 2
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, seq_len, size=batch_size)
    rows = np.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = np.stack([values, markers], axis=-1).astype("float32")
    targets = (values[rows, first] + values[rows, second]).astype("float32")[:, None]
    return inputs, targets


class AddingProblem(keras.utils.PyDataset):
    """Fresh random batches, reproducible from the seed and the batch index."""

    def __init__(self, batch_size, seq_len, num_batches, seed):
        super().__init__()
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.total_batches = num_batches
        self.seed = seed

    def __len__(self):
        return self.total_batches

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        return adding_batch(rng, self.batch_size, self.seq_len)


def build_model(kind, seq_len, units, num_layers, grad_clipping=None):
    inputs = keras.Input((seq_len, 2))
    x = inputs
    if kind == "indrnn":
        for i in range(num_layers):
            last = i == num_layers - 1
            recurrent = (
                keras.initializers.RandomUniform(0.5 ** (1 / seq_len), 2 ** (1 / seq_len))
                if last
                else None  # default: U(0, bound)
            )
            x = gk.layers.IndRNN(
                units,
                timesteps=seq_len,
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.001),
                recurrent_initializer=recurrent,
                return_sequences=not last,
                grad_clipping=grad_clipping,
                name=f"indrnn_{i}",
            )(x)
    elif kind == "lstm":
        for i in range(num_layers):
            x = keras.layers.LSTM(units, return_sequences=i < num_layers - 1)(x)
    elif kind == "simplernn":
        for i in range(num_layers):
            x = keras.layers.SimpleRNN(units, return_sequences=i < num_layers - 1)(x)
    elif kind in ("mut1", "mut2", "mut3", "mingru", "minlstm"):
        layer = {"mingru": gk.layers.MinGRU, "minlstm": gk.layers.MinLSTM}.get(kind)
        layer = layer or getattr(gk.layers, kind.upper())
        for i in range(num_layers):
            x = layer(units, return_sequences=i < num_layers - 1)(x)
    elif kind == "lru":
        x = build_lru_stack(x, units, num_layers)
    else:
        raise ValueError(f"Argument `--model` must be one of {', '.join(MODELS)}. Received: {kind}")
    outputs = keras.layers.Dense(1)(x)
    return keras.Model(inputs, outputs, name=f"adding_{kind}")


def build_lru_stack(x, units, num_layers):
    """`Dense(units, relu)`, then `num_layers` LRU layers of `units` states
    joined by `Dense(units, gelu)`; the last returns its last output."""
    x = keras.layers.Dense(units, activation="relu", name="encoder")(x)
    for i in range(num_layers):
        if i:
            x = keras.layers.Dense(units, activation="gelu")(x)
        x = gk.layers.LRU(
            units,
            r_min=0.9,
            r_max=0.999,
            max_phase=np.pi / 10,
            return_sequences=i < num_layers - 1,
            name=f"lru_{i}",
        )(x)
    return x


def time_reach(model, x, y):
    """`{sequence: reach}` of `keras_gradkit.diagnose` on the batch `(x, y)`:
    how many steps back from the last one the gradient arrives."""
    report = gk.diagnose(model, x, y)
    return {name: s["reach"] for name, s in report.measures.get("time", {}).items()}


class PrintValidation(keras.callbacks.Callback):
    """Prints the validation MSE at every evaluation; stops training once it
    is below `target_mse` or after `max_minutes` (both optional)."""

    def __init__(self, steps_per_epoch, max_minutes=None, target_mse=None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.max_minutes = max_minutes
        self.target_mse = target_mse
        self.start = None
        self.steps_done = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        elapsed = time.perf_counter() - self.start
        print(
            f"step {step:6d}  train MSE {logs['loss']:.4f}  val MSE {logs['val_loss']:.4f}"
            f"  (baseline {BASELINE_MSE:.3f})  {elapsed:7.1f} s",
            flush=True,
        )
        self.steps_done = step
        if self.target_mse is not None and logs["val_loss"] < self.target_mse:
            print(f"validation MSE below --target-mse {self.target_mse}: stopping", flush=True)
            self.model.stop_training = True
        if self.max_minutes is not None and elapsed > 60.0 * self.max_minutes:
            print(f"--max-minutes {self.max_minutes} reached: stopping", flush=True)
            self.model.stop_training = True


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="indrnn")
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--layers", type=int, default=None, help="2 for indrnn, 1 otherwise")
    parser.add_argument(
        "--lr", type=float, default=None, help="2e-4 for indrnn, 1e-3 for lru, 2e-3 otherwise"
    )
    parser.add_argument(
        "--clipping",
        choices=["official", "global-norm"],
        default="official",
        help="official: IndRNN's grad_clipping=10 inside the recurrence (Lasagne's, as the "
        "official code); global-norm: ClipByGlobalNorm(10) of the whole gradient. LSTM and "
        "SimpleRNN always use global-norm (Keras has no clip inside its recurrence)",
    )
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default="runs/adding_problem")
    parser.add_argument("--demo", action="store_true", help="short run: IndRNN, T=100, 1000 steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop at the first evaluation after this much training time",
    )
    parser.add_argument(
        "--target-mse",
        type=float,
        default=None,
        help="stop at the first evaluation whose validation MSE is below this",
    )
    parser.add_argument(
        "--gradboard", action="store_true", help="also log gradients with GradientBoard"
    )
    parser.add_argument(
        "--probe-size", type=int, default=16, help="probe batch of the time gradient"
    )
    parser.add_argument(
        "--reach",
        action="store_true",
        help="print the gradient's reach through time at initialization and after training",
    )
    parser.add_argument(
        "--time-gradient-png", default=None, help="with --gradboard: save the last plot here"
    )
    args = parser.parse_args(argv)
    if args.demo:
        args.model, args.seq_len, args.steps = "indrnn", 100, 1000
    if args.layers is None:
        args.layers = 2 if args.model == "indrnn" else 1
    if args.lr is None:
        args.lr = DEFAULT_LR[args.model]
    if args.steps < args.eval_every:
        args.eval_every = args.steps
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    inside = args.clipping == "official" and args.model == "indrnn"
    model = build_model(
        args.model, args.seq_len, args.units, args.layers, grad_clipping=10.0 if inside else None
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(args.lr, 20000, 0.1, staircase=True)
    policy = gk.clipping.NoClip() if inside else gk.clipping.ClipByGlobalNorm(10.0)
    optimizer = gk.optimizers.ClippedOptimizer(keras.optimizers.Adam(schedule), policy)
    model.compile(optimizer=optimizer, loss="mse")
    val_x, val_y = adding_batch(
        np.random.default_rng([args.seed, 10**9]), args.val_size, args.seq_len
    )
    epochs = args.steps // args.eval_every
    data = AddingProblem(args.batch_size, args.seq_len, args.eval_every * epochs, args.seed)
    logdir = os.path.join(args.logdir, f"{args.model}_T{args.seq_len}")
    print(
        f"adding problem: {args.model} x{args.layers} ({args.units} units), T={args.seq_len}, "
        f"{args.steps} steps of batch {args.batch_size}, lr {args.lr}, "
        f"{'grad_clipping=10 in the recurrence' if inside else 'ClipByGlobalNorm(10)'}; "
        f"logs in {logdir}",
        flush=True,
    )
    probe = (val_x[: args.probe_size], val_y[: args.probe_size])
    if args.reach:
        print_reach("initialization", time_reach(model, *probe), args.seq_len)
    printer = PrintValidation(args.eval_every, args.max_minutes, args.target_mse)
    callbacks = [keras.callbacks.TensorBoard(logdir), printer]
    if args.gradboard:
        callbacks.append(gk.callbacks.GradientBoard(logdir, time_probe=probe))
    start = time.perf_counter()
    history = model.fit(
        data,
        steps_per_epoch=args.eval_every,
        epochs=epochs,
        validation_data=(val_x, val_y),
        validation_batch_size=250,
        callbacks=callbacks,
        verbose=0,
    )
    wall = time.perf_counter() - start
    final = history.history["val_loss"][-1]
    best = min(history.history["val_loss"])
    print(
        f"RESULT | {args.model} x{args.layers} | T={args.seq_len} | {printer.steps_done} steps | "
        f"{wall:.0f} s | final val MSE {final:.4f} | best {best:.4f} | baseline {BASELINE_MSE:.3f} |",
        flush=True,
    )
    if args.reach:
        print_reach("after training", time_reach(model, *probe), args.seq_len)
    if args.gradboard:
        report_time_gradient(logdir, args.seq_len, args.time_gradient_png)
    return final


def print_reach(when, reaches, seq_len):
    print(
        f"REACH | {when} | "
        + ", ".join(f"{name}: {steps} of T={seq_len}" for name, steps in reaches.items()),
        flush=True,
    )


def report_time_gradient(logdir, seq_len, png_path=None):
    """Prints the time-gradient reach read back from the event files, and
    optionally saves the last `time_gradient/input` image as a PNG."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(os.path.join(logdir, "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    for tag in sorted(t for t in tags if t.endswith("reach")):
        values = [(e.step, int(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        print(
            f"GRADBOARD | {tag} (steps back, of T={seq_len}) | "
            + ", ".join(f"step {s}: {v}" for s, v in values)
        )
    norms = tensor_util.make_ndarray(acc.Tensors("time_gradient/input/norms")[-1].tensor_proto)
    print(
        f"GRADBOARD | time gradient at t=0 / t=T-1: {norms[0]:.3e} / {norms[-1]:.3e} "
        f"(ratio {norms[0] / norms[-1]:.3e})"
    )
    if png_path and "time_gradient/input" in tags:
        image = tensor_util.make_ndarray(acc.Tensors("time_gradient/input")[-1].tensor_proto)
        os.makedirs(os.path.dirname(png_path) or ".", exist_ok=True)
        with open(png_path, "wb") as f:
            f.write(image[2])  # [width, height, encoded PNG]
        print(f"GRADBOARD | saved {png_path}")


if __name__ == "__main__":
    main()
