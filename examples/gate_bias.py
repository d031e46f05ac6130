"""Gate-bias initialization on the adding problem: does the LSTM learn a long dependency?

Trains the same LSTM on the adding problem (Hochreiter & Schmidhuber 1997; the
target is the sum of the two inputs marked among T random numbers) with four
bias initializations and prints the validation MSE (the trivial baseline,
always predicting 1, scores about 0.167):

- `keras`: `keras.layers.LSTM` as it comes (its `unit_forget_bias=True` sets
  the forget bias to 1, the rest 0);
- `zero`: `keras_gradkit.layers.LSTM(forget_bias=0.0)`: every bias 0;
- `forget1`: `keras_gradkit.layers.LSTM(forget_bias=1.0)` (Gers et al. 2000);
- `chrono`: `keras_gradkit.layers.LSTM(chrono_timesteps=T)` (Tallec & Ollivier 2018).

All variants start from the same kernels (same seed), so `keras` and `forget1`
must train identically: a check that the two layers are the same computation.

    python examples/gate_bias.py                    # T=200, a few minutes on 2 CPU cores
    python examples/gate_bias.py --timesteps 500 --epochs 20
    python examples/gate_bias.py --gradboard        # + gradient histograms, norms, gradient through time
    tensorboard --logdir runs/gate_bias
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from adding_problem import adding_batch

import keras_gradkit

VARIANTS = ("keras", "zero", "forget1", "chrono")
BASELINE_MSE = 1.0 / 6.0


def make_recurrent_layer(variant, units, timesteps):
    if variant == "keras":
        return keras.layers.LSTM(units)
    if variant == "zero":
        return keras_gradkit.layers.LSTM(units, forget_bias=0.0)
    if variant == "forget1":
        return keras_gradkit.layers.LSTM(units, forget_bias=1.0)
    if variant == "chrono":
        return keras_gradkit.layers.LSTM(units, chrono_timesteps=timesteps, seed=0)
    raise ValueError(f"Unknown variant {variant!r}; choose from {VARIANTS}.")


def train_variant(variant, args, data):
    x_train, y_train, x_val, y_val = data
    keras.utils.set_random_seed(args.seed)  # same kernels and batch order for every variant
    model = keras.Sequential(
        [
            keras.Input((args.timesteps, 2)),
            make_recurrent_layer(variant, args.units, args.timesteps),
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, global_clipnorm=1.0), loss="mse"
    )
    bias = model.layers[0].cell.bias.numpy()
    forget = bias[args.units : 2 * args.units]
    callbacks = [keras.callbacks.TensorBoard(os.path.join(args.logdir, variant))]
    stats = {}
    if args.gradboard:
        # Gradient through time on 16 validation sequences: how far back each
        # initialization lets the loss reach.
        board = keras_gradkit.callbacks.GradientBoard(
            os.path.join(args.logdir, variant), time_probe=(x_val[:16], y_val[:16])
        )
        callbacks.append(board)
        # Read once fit has ended: the latest step's statistics of the plain Adam.
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_train_end=lambda logs: stats.update(board.gradient_statistics())
            )
        )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    if args.gradboard:
        print(
            f"  {variant:8s} GradientBoard: last global gradient norm {stats['global_norm']:.3e}, "
            f"{int(stats['clipped_steps'])}/{int(stats['steps'])} updates clipped by global_clipnorm=1.0"
        )
    val = history.history["val_loss"]
    solved = next((i + 1 for i, v in enumerate(val) if v < args.solved_mse), None)
    return {
        "variant": variant,
        "forget_bias_mean": float(forget.mean()),
        "val_mse_first": val[0],
        "val_mse_best": min(val),
        "val_mse_last": val[-1],
        "solved_epoch": solved,
        "seconds": seconds,
        "curve": val,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=200, help="sequence length T")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--train-samples", type=int, default=6400)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--solved-mse", type=float, default=0.05, help="validation MSE counted as solved"
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=os.path.join("runs", "gate_bias"))
    parser.add_argument(
        "--gradboard",
        action="store_true",
        help="also log gradients and the gradient through time with keras_gradkit's GradientBoard",
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    data = adding_batch(rng, args.train_samples, args.timesteps) + adding_batch(
        rng, args.val_samples, args.timesteps
    )
    baseline = float(np.mean((data[3] - data[1].mean()) ** 2))
    print(
        f"adding problem T={args.timesteps}, LSTM units={args.units}, {args.train_samples} training samples, "
        f"batch {args.batch_size}, {args.epochs} epochs ({args.epochs * (args.train_samples // args.batch_size)} steps); "
        f"baseline MSE {BASELINE_MSE:.3f} (predicting the training mean on this validation set: {baseline:.3f}); logs in {args.logdir}"
    )
    results = []
    for variant in args.variants:
        result = train_variant(variant, args, data)
        results.append(result)
        print(f"  {variant:8s} val MSE per epoch: " + " ".join(f"{v:.4f}" for v in result["curve"]))

    print()
    print(
        f"| variant | mean initial b_f | val MSE epoch 1 | best val MSE | final val MSE | epochs to MSE < {args.solved_mse} | train s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        solved = r["solved_epoch"] if r["solved_epoch"] is not None else "not reached"
        print(
            f"| {r['variant']} | {r['forget_bias_mean']:.2f} | {r['val_mse_first']:.4f} | {r['val_mse_best']:.4f} | "
            f"{r['val_mse_last']:.4f} | {solved} | {r['seconds']:.0f} |"
        )
    return results


if __name__ == "__main__":
    main()
