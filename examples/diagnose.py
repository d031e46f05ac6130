"""The gradient doctor on the models of the other examples: what
`keras_gradkit.diagnose` finds at initialization, and what GradientBoard
finds during a short `fit`.

One row per model:

- Keras's `LSTM` and `GRU` on the adding problem at T = 500
  (`examples/adding_problem.py`), and `keras_gradkit.layers.IndRNN` with the
  long-memory recurrent initialization, |u| from (2^(-1/T), 2^(1/T)), on the
  same batches;
- the IRNN of `examples/clipping.py` (a ReLU `SimpleRNN` with identity
  recurrent weights, SGD at 0.05) on scikit-learn's digits read pixel by
  pixel, without clipping (`NoClip`) and with `ClipByGlobalNorm(1.0)`;
- a 20-layer sigmoid MLP on the flattened digits, and the same depth of
  residual blocks `x + Dense(64, "sigmoid")(x)`;
- the 24-layer plain IndRNN stack and the residual IndRNN stack of
  `examples/deep_rnn.py` (its `--setup previous`, on its digits split);
- a small ReLU MLP on the digits as it should be, with one NaN in the
  training data, and with Adam at a learning rate of 10.

Three more rows follow the advice the doctor gives for two of them and are
compared with those in a last section, same data, same budget: the LSTM
becomes the IndRNN above, the same IndRNN with the input weights of
`adding_problem.py` (N(0, 0.001)), or `keras_gradkit.layers.LSTM(chrono_timesteps=T)`;
the sigmoid MLP becomes ReLU with He initialization (or the residual one).

For each row it prints what `diagnose` found at initialization on one batch
(as `kind@where`, or "nothing"), every `(kind, where)` GradientBoard found
during the fit (`GradientBoard(<logdir>/<row>, histogram_freq=1)`: it checks
at the end of each epoch, from the epoch's last step; the recurrent models
get a time probe of the diagnosed batch, the deep stacks none, since each of
their 25 probed sequences costs a pass), the final training loss and, on
digits, the validation accuracy; then the numbers behind them. An epoch is
`--steps` batches on the adding problem and one pass over the 1,437
training images on digits (`--digits-steps` makes it shorter: more checks).

    python examples/diagnose.py                    # the guide's table
    python examples/diagnose.py --rows irnn learning_rate_10 --digits-steps 1 --epochs 10
    python examples/diagnose.py --quick            # seconds: tiny sizes (the test)
    tensorboard --logdir runs/diagnose             # the Text dashboard, tag `diagnosis`
"""

import argparse
import math
import os
import sys
import time
import warnings
from typing import NamedTuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import clipping
import deep_rnn
import keras
import numpy as np
from adding_problem import DEFAULT_LR, AddingProblem, adding_batch

import keras_gradkit as gk


class Run(NamedTuple):
    """A compiled model and what to measure and train it on."""

    model: keras.Model
    probe: tuple  # (x, y): the batch diagnose measures
    fit: dict  # the arguments of `model.fit`
    time_probe: bool  # whether GradientBoard probes the batch through time


# ----------------------------------------------------------------- the rows
def _adding(args, learning_rate, make_layer, *layer_args, **kwargs):
    """The adding-problem row of the recurrent layer `make_layer(*layer_args, **kwargs)`."""
    # Seeded before the layer is made: creating an initializer draws its seed.
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((args.seq_len, 2)),
            make_layer(*layer_args, **kwargs),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    probe = adding_batch(np.random.default_rng([args.seed, 10**9]), args.batch_size, args.seq_len)
    train = AddingProblem(args.batch_size, args.seq_len, args.steps * args.epochs, args.seed)
    return Run(model, probe, dict(x=train, steps_per_epoch=args.steps), True)


def lstm(args):
    return _adding(args, DEFAULT_LR["lstm"], keras.layers.LSTM, units=args.units, name="lstm")


def gru(args):
    return _adding(args, DEFAULT_LR["lstm"], keras.layers.GRU, units=args.units, name="gru")


def _long_memory_indrnn(units, timesteps, small_input=False):
    # `small_input`: the input weights of `adding_problem.py` (the paper's adding setup).
    kernel = keras.initializers.RandomNormal(0.0, 0.001) if small_input else "glorot_uniform"
    return gk.layers.IndRNN(
        units,
        recurrent_initializer=keras.initializers.RandomUniform(
            2 ** (-1 / timesteps), 2 ** (1 / timesteps)
        ),
        kernel_initializer=kernel,
        name="ind_rnn",
    )


def indrnn(args):
    return _adding(args, DEFAULT_LR["indrnn"], _long_memory_indrnn, args.units, args.seq_len)


def indrnn_small_input(args):
    return _adding(args, DEFAULT_LR["indrnn"], _long_memory_indrnn, args.units, args.seq_len, True)


def lstm_chrono(args):
    return _adding(
        args,
        DEFAULT_LR["lstm"],
        gk.layers.LSTM,
        units=args.units,
        chrono_timesteps=args.seq_len,
        name="lstm",
    )


def _classifier(model, optimizer, data, batch_size, probe_size):
    (x, y), validation = data
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    fit = dict(x=x, y=y, batch_size=batch_size, validation_data=validation)
    return Run(model, (x[:probe_size], y[:probe_size]), fit, False)


def _digits_epochs(args, fit):
    """`fit` with epochs of `--digits-steps` batches (None: whole passes)."""
    return fit if args.digits_steps is None else dict(fit, steps_per_epoch=args.digits_steps)


def _irnn(args, policy):
    (x, y), (x_val, y_val) = clipping.pixel_digits(args.seed)
    n = args.samples or len(x)
    model = clipping.build_model(64, 1, 10, args.irnn_units, 1.0, 0.1, args.seed)
    optimizer = gk.optimizers.ClippedOptimizer(keras.optimizers.SGD(0.05), policy)
    data = ((x[:n], y[:n]), (x_val[:n], y_val[:n]))
    return _classifier(model, optimizer, data, 50, 50)._replace(time_probe=True)


def irnn(args):
    return _irnn(args, gk.clipping.NoClip())


def irnn_clipped(args):
    return _irnn(args, gk.clipping.ClipByGlobalNorm(1.0))


def _flat_digits(args):
    task = deep_rnn.digits_task(args.seed, args.samples)
    return tuple((x.reshape(len(x), -1), y) for x, y in (task.train, task.test))


def _mlp(args, depth, activation, initializer="glorot_uniform", residual=False, nan=False):
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((64,))
    h = inputs
    for i in range(depth):
        f = keras.layers.Dense(
            64, activation, kernel_initializer=initializer, name=f"dense_{i + 1}"
        )(h)
        h = keras.layers.Add(name=f"add_{i + 1}")([h, f]) if residual else f
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(h))
    (x, y), validation = _flat_digits(args)
    if nan:
        x = x.copy()
        x[3, 10] = np.nan  # one pixel of one image
    return model, ((x, y), validation)


def mlp_sigmoid(args):
    model, data = _mlp(args, args.mlp_depth, "sigmoid")
    return _classifier(model, keras.optimizers.Adam(1e-3), data, 64, 64)


def mlp_residual(args):
    model, data = _mlp(args, args.mlp_depth, "sigmoid", residual=True)
    return _classifier(model, keras.optimizers.Adam(1e-3), data, 64, 64)


def mlp_relu_he(args):
    model, data = _mlp(args, args.mlp_depth, "relu", "he_normal")
    return _classifier(model, keras.optimizers.Adam(1e-3), data, 64, 64)


def _stack(args, kind):
    # As `deep_rnn.run_model` with `--setup previous` builds and compiles it.
    keras.utils.set_random_seed(args.seed)
    task = deep_rnn.digits_task(args.seed, args.samples)
    model = deep_rnn.build_model(kind, args.stack_depth, args.units, task, "previous")
    model.compile(
        optimizer=deep_rnn.make_optimizer("previous", 1e-3), loss=task.loss, metrics=["accuracy"]
    )
    (x, y), validation = task.train, task.test
    fit = dict(x=x, y=y, batch_size=64, validation_data=validation)
    return Run(model, (x[:64], y[:64]), fit, False)


def plain_indrnn(args):
    return _stack(args, "plain")


def residual_indrnn(args):
    return _stack(args, "residual")


def mlp_small(args):
    model, data = _mlp(args, 2, "relu", "he_normal")
    return _classifier(model, keras.optimizers.Adam(1e-3), data, 64, 64)


def nan_input(args):
    model, data = _mlp(args, 2, "relu", "he_normal", nan=True)
    return _classifier(model, keras.optimizers.Adam(1e-3), data, 64, 64)


def learning_rate_10(args):
    model, data = _mlp(args, 2, "relu", "he_normal")
    return _classifier(model, keras.optimizers.Adam(10.0), data, 64, 64)


ROWS = {
    "lstm": (lstm, "Keras LSTM, adding T={T}"),
    "gru": (gru, "Keras GRU, adding T={T}"),
    "indrnn": (indrnn, "IndRNN long-memory init, adding T={T}"),
    "indrnn_small_input": (indrnn_small_input, "the same, input weights N(0, 0.001) (advice)"),
    "lstm_chrono": (lstm_chrono, "LSTM(chrono_timesteps=T), adding T={T} (advice)"),
    "irnn": (irnn, "IRNN, pixel digits, no clipping"),
    "irnn_clipped": (irnn_clipped, "IRNN, pixel digits, ClipByGlobalNorm(1)"),
    "mlp_sigmoid": (mlp_sigmoid, "{D}-layer sigmoid MLP, digits"),
    "mlp_residual": (mlp_residual, "{D} residual sigmoid blocks, digits"),
    "mlp_relu_he": (mlp_relu_he, "{D}-layer ReLU MLP, He init, digits (advice)"),
    "plain_indrnn": (plain_indrnn, "{N}-layer plain IndRNN stack, pixel digits"),
    "residual_indrnn": (residual_indrnn, "ResidualIndRNN stack (N={N}), pixel digits"),
    "mlp_small": (mlp_small, "2-layer ReLU MLP, digits"),
    "nan_input": (nan_input, "the same, one NaN pixel in the data"),
    "learning_rate_10": (learning_rate_10, "the same, Adam learning rate 10"),
}

# What --quick runs unless --rows says otherwise: each model costs its traces
# (train step, diagnose, time probe), seconds on TensorFlow and JAX.
QUICK_ROWS = ("mlp_small", "nan_input", "learning_rate_10")

# (the row, the row that follows its advice, what the advice was)
ADVICE = (
    ("lstm", "indrnn", "IndRNN with the long-memory initialization"),
    ("lstm", "indrnn_small_input", "the same IndRNN, input weights N(0, 0.001)"),
    ("lstm", "lstm_chrono", "chrono initialization"),
    ("mlp_sigmoid", "mlp_relu_he", "ReLU with He initialization"),
    ("mlp_sigmoid", "mlp_residual", "residual connections"),
)


# ------------------------------------------------------------- one row
def run_row(name, args):
    start = time.perf_counter()
    run = ROWS[name][0](args)
    at_init = gk.diagnose(run.model, *run.probe)
    board = gk.callbacks.GradientBoard(
        os.path.join(args.logdir, name),
        histogram_freq=1,
        time_probe=run.probe if run.time_probe else None,
    )
    fit = run.fit if "steps_per_epoch" in run.fit else _digits_epochs(args, run.fit)
    history = run.model.fit(**fit, epochs=args.epochs, callbacks=[board], verbose=0)
    weights = [keras.ops.convert_to_numpy(w) for w in run.model.weights]
    return {
        "name": name,
        "at_init": at_init,
        "findings": board.findings,
        "report": board.report,
        "loss": history.history["loss"],
        "val_accuracy": history.history.get("val_accuracy", [math.nan])[-1],
        "non_finite_weights": sum(int(np.size(w) - np.isfinite(w).sum()) for w in weights),
        "seconds": time.perf_counter() - start,
    }


def describe(findings):
    """`kind@where, ...`, a kind found at many layers shortened to its first
    and last; "nothing" when empty."""
    by_kind = {}
    for f in findings:
        by_kind.setdefault(f.kind, []).append(f.where)
    parts = []
    for kind in gk.diagnostics.KINDS:
        wheres = by_kind.get(kind, [])
        if len(wheres) > 2:
            parts.append(f"{kind}@{wheres[0]}..{wheres[-1]} ({len(wheres)} layers)")
        elif wheres:
            parts.append(", ".join(f"{kind}@{w}" for w in wheres))
    return ", ".join(parts) or "nothing"


def measured(report):
    """The numbers behind a report, the through-time ones at the most extreme sequence."""
    if report is None:
        return "no check"
    m, parts = report.measures, []
    if "non_finite_entries" in m:
        return f"{m['non_finite_entries']} non-finite entries in the batch"
    parts.append(f"gradient norm {m['gradient_norm']:.3g}")
    time_measures = {k: t for k, t in m.get("time", {}).items() if t["peak"] > 0 and t["late"] > 0}
    # The recurrent layers' sequences, as the findings name them; the model input if none.
    time_measures = {k: t for k, t in time_measures.items() if k != "input"} or time_measures
    if time_measures:
        low = min(time_measures, key=lambda k: time_measures[k]["early"] / time_measures[k]["peak"])
        high = max(
            time_measures, key=lambda k: time_measures[k]["early"] / time_measures[k]["late"]
        )
        t_low, t_high = time_measures[low], time_measures[high]
        parts.append(
            f"earliest/largest {t_low['early'] / t_low['peak']:.3g} ({low}), "
            f"earliest/latest {t_high['early'] / t_high['late']:.3g} ({high}), "
            f"reach {t_low['reach']} of {t_low['steps']}"
        )
    depth = m.get("depth", {})
    if len(depth.get("norms", ())) >= 2:
        parts.append(f"first/last {depth['first_to_last']:.3g} ({len(depth['norms'])} layers)")
    for key, label in (
        ("update_ratio", "largest update ratio"),
        ("rms_update_ratio", "rms update ratio since the previous check"),
        ("clipped_fraction", "clipped fraction"),
        ("skipped_fraction", "skipped fraction"),
    ):
        if key in m:
            parts.append(f"{label} {m[key]:.3g}")
    return "; ".join(parts)


# ----------------------------------------------------------- printing
def label(name, args):
    return ROWS[name][1].format(T=args.seq_len, D=args.mlp_depth, N=args.stack_depth)


def print_table(results, args):
    print(
        f"\n| row | model | diagnose at init | GradientBoard, {args.epochs} epochs "
        "| final train loss | val acc |"
    )
    print("|---|---|---|---|---:|---:|")
    for r in results:
        accuracy = "" if math.isnan(r["val_accuracy"]) else f"{r['val_accuracy']:.3f}"
        print(
            f"| {r['name']} | {label(r['name'], args)} | {describe(r['at_init'].findings)} | "
            f"{describe(r['findings'])} | {r['loss'][-1]:.4g} | {accuracy} |"
        )
    print("\nThe numbers behind them (at init; after the fit, GradientBoard's last check):")
    for r in results:
        print(f"  {r['name']}: at init: {measured(r['at_init'])}")
        print(
            f"  {' ' * len(r['name'])}  after: {measured(r['report'])}; "
            f"train loss by epoch {', '.join(f'{v:.4g}' for v in r['loss'])}; "
            f"{r['seconds']:.0f} s"
            + (f"; {r['non_finite_weights']} non-finite weights" if r["non_finite_weights"] else "")
        )
        if r["findings"]:
            found = ", ".join(
                f"{f.kind}@{f.where} {f.value:.3g} (threshold {f.threshold:.3g})"
                for f in r["findings"]
            )
            print(f"  {' ' * len(r['name'])}  found in training, when first seen: {found}")


def print_advice(results, args):
    by_name = {r["name"]: r for r in results}
    pairs = [p for p in ADVICE if p[0] in by_name and p[1] in by_name]
    if not pairs:
        return
    print(f"\nWhat following the advice changed (same data, {args.epochs} epochs each):")
    for before, after, advice in pairs:
        b, a = by_name[before], by_name[after]
        print(f"  {before} -> {after} ({advice}):")
        for key, r in (("before", b), ("after", a)):
            score = f"train loss {r['loss'][-1]:.4g}"
            if not math.isnan(r["val_accuracy"]):
                score += f", val accuracy {r['val_accuracy']:.3f}"
            print(
                f"    {key:<6} diagnose: {describe(r['at_init'].findings)} "
                f"[{measured(r['at_init'])}]; {score}"
            )


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", nargs="+", default=None, choices=list(ROWS), help="default: all (--quick: 3)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every fit")
    parser.add_argument("--steps", type=int, default=30, help="adding problem: batches per epoch")
    parser.add_argument(
        "--digits-steps",
        type=int,
        default=None,
        help="digits: batches per epoch (default: one pass over the training images)",
    )
    parser.add_argument("--seq-len", type=int, default=500, help="adding problem: T")
    parser.add_argument("--batch-size", type=int, default=32, help="adding problem: batch")
    parser.add_argument("--units", type=int, default=32, help="adding rows and IndRNN stacks")
    parser.add_argument("--irnn-units", type=int, default=64)
    parser.add_argument("--mlp-depth", type=int, default=20)
    parser.add_argument("--stack-depth", type=int, default=24)
    parser.add_argument("--samples", type=int, default=None, help="digits: the first SAMPLES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=os.path.join("runs", "diagnose"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seconds (the test): by default only the rows " + ", ".join(QUICK_ROWS) + "; "
        "T = 20, 4 units, depth 4, 2 epochs of 2 batches, 128 digits",
    )
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = list(QUICK_ROWS if args.quick else ROWS)
    if args.quick:
        args.seq_len, args.units, args.irnn_units, args.batch_size = 20, 4, 4, 16
        args.mlp_depth, args.stack_depth, args.samples = 4, 4, 128
        args.epochs, args.steps = 2, 2
    return args


def main(argv=None):
    args = parse_args(argv)
    print(
        f"backend {keras.backend.backend()}, seed {args.seed}; adding problem: {args.epochs} "
        f"epochs of {args.steps} batches of {args.batch_size}; digits: {args.epochs} epochs of "
        + ("one pass" if args.digits_steps is None else f"{args.digits_steps} batches"),
        flush=True,
    )
    start = time.perf_counter()
    results = []
    with warnings.catch_warnings():
        # GradientBoard warns each new finding once; the table prints them all.
        warnings.simplefilter("ignore", gk.diagnostics.GradientWarning)
        for name in args.rows:
            results.append(run_row(name, args))
            r = results[-1]
            print(
                f"{name}: at init {describe(r['at_init'].findings)}; "
                f"in training {describe(r['findings'])} ({r['seconds']:.0f} s)",
                flush=True,
            )
    print_table(results, args)
    print_advice(results, args)
    print(f"\nTotal {time.perf_counter() - start:.0f} s. Logs: tensorboard --logdir {args.logdir}")
    return results


if __name__ == "__main__":
    main()
