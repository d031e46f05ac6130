"""What recording an optimizer step costs on PyTorch: the package's own step
ops (`backend/torch/step_ops.py`, torch's ops) against Keras's ops (the
same functions in `keras.ops`, `backend/common/step_ops.py`), in one run.

PyTorch runs the train step eagerly, so the recording's few dozen small
ops run at every step and cost what each call costs in Python. On
TensorFlow and JAX the step is traced: the same ops run once per trace and
the compiled step fuses them, and their `step_ops` *is* `keras.ops`, so
there is nothing to compare; the script says so and stops there.

Two measures, each for two models (2 x LSTM(64) -> Dense(1), 8 variables,
as in `gradboard_overhead.py`; a 20-layer Dense(32) MLP, 40 variables),
the two variants alternating, `--rounds` rounds:

- **hook**: the monitor's work around one `apply` (`before_update`, the
  variables read before and after, `after_update`), on fixed gradients,
  outside `fit`; ms per step, the minimum over the rounds of the mean over
  `--hook-steps` steps.
- **fit**: `fit` with `GradientBoard(histogram_freq=1, write_plots=False,
  diagnose=False)`, `--steps` steps per epoch, 2 epochs per timed `fit`,
  and a plain `fit` (no callback) for reference; ms per step, minimum over
  the rounds, and the board's ratio to the plain fit.

    python benchmarks/record_cost.py                      # PyTorch (any --backend: see above)
    python benchmarks/record_cost.py --rounds 7 --steps 40
"""

import contextlib
import os
import platform
import sys
import tempfile
import time

import _per_backend


def parse_args(argv=None):
    parser = _per_backend.parser(
        __doc__, "torch", "default: torch (the other backends trace the step: nothing to compare)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hook-steps", type=int, default=200, help="hook calls per timing")
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    return parser.parse_args(argv)


def _models(keras):
    def lstm():
        model = keras.Sequential(
            [
                keras.Input((50, 4)),
                keras.layers.LSTM(64, return_sequences=True),
                keras.layers.LSTM(64),
                keras.layers.Dense(1),
            ]
        )
        return model, (50, 4)

    def mlp():
        layers = [keras.Input((16,))]
        layers += [keras.layers.Dense(32, activation="relu") for _ in range(19)]
        return keras.Sequential(layers + [keras.layers.Dense(1)]), (16,)

    return {"2 x LSTM(64), 8 variables": lstm, "MLP, 20 Dense, 40 variables": mlp}


@contextlib.contextmanager
def keras_step_ops():
    """The recording with Keras's ops in place of the backend's step ops."""
    from keras_gradkit import backend
    from keras_gradkit.backend.common import step_ops as keras_ops
    from keras_gradkit.backend.common import variable_sink
    from keras_gradkit.recording import monitor, recorder, step

    places = [(m, "step_ops") for m in (monitor, recorder, step, backend.get("recording"))]
    places.append((variable_sink, "_step_ops"))
    saved = [(m, name, getattr(m, name)) for m, name in places]
    loaded = backend._loaded.get("step_ops")
    try:
        for m, name in places:
            setattr(m, name, keras_ops)
        backend._loaded["step_ops"] = keras_ops
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
        backend._loaded["step_ops"] = loaded


VARIANTS = {"torch ops (step_ops)": contextlib.nullcontext, "keras.ops": keras_step_ops}


def time_hook(keras, make, steps, order):
    """ms per step of the monitor's work around `apply`, per variant."""
    import numpy as np

    from keras_gradkit.backend import get
    from keras_gradkit.recording import monitor as monitor_module

    model, _ = make()
    model.compile(optimizer="adam", loss="mse")
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    grads = [
        keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32") * 0.01)
        for v in variables
    ]
    model.optimizer.build(variables)
    monitor = monitor_module.Monitor(model.optimizer)
    monitor.prepare(variables, gradients=True)
    monitor.active = True
    reads = get("recording")

    def hooked():  # as `backend/common/hooks.hook_apply`, without the update
        pending = monitor.before_update(grads, variables)
        before = reads.snapshots(variables)
        monitor.after_update(pending, before, reads.values_now(variables))

    times = {}
    for name in order:
        with VARIANTS[name]():
            for _ in range(5):
                hooked()
            start = time.perf_counter()
            for _ in range(steps):
                hooked()
            times[name] = (time.perf_counter() - start) / steps * 1e3
    return times


def time_fit(keras, make, steps, log_dir, order):
    """ms per step of `fit` with GradientBoard per variant, and of a plain fit."""
    import numpy as np

    import keras_gradkit as gk

    model, shape = make()
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * steps, *shape)).astype("float32")
    y = rng.normal(size=(32 * steps, 1)).astype("float32")

    def fit(callbacks):
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=callbacks)
        return (time.perf_counter() - start) / (2 * steps) * 1e3

    def board():
        return [
            gk.callbacks.GradientBoard(log_dir, histogram_freq=1, write_plots=False, diagnose=False)
        ]

    fit(board())  # warm-up: the optimizer's variables, the first epoch's writes
    times = {"plain fit": fit([])}
    for name in order:
        with VARIANTS[name]():
            times[name] = fit(board())
    return times


def main(argv=None):
    args = parse_args(argv)
    if args.backend == "all":
        _per_backend.run_all(__file__)
        return
    os.environ["KERAS_BACKEND"] = args.backend
    import keras

    print(
        f"backend {keras.backend.backend()}, Keras {keras.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU(s)"
    )
    if keras.backend.backend() != "torch":
        print(
            "The step is traced on this backend and its step_ops are keras.ops: the recording's "
            "ops run once per trace. Nothing to compare (run with --backend torch)."
        )
        return
    keras.utils.set_random_seed(0)
    models = _models(keras)
    hook = {m: {v: [] for v in VARIANTS} for m in models}
    fits = {m: {v: [] for v in ("plain fit", *VARIANTS)} for m in models}
    with tempfile.TemporaryDirectory() as log_dir:
        for r in range(args.rounds):
            order = list(VARIANTS)[:: 1 if r % 2 == 0 else -1]  # alternate which goes first
            for m, make in models.items():
                for v, t in time_hook(keras, make, args.hook_steps, order).items():
                    hook[m][v].append(t)
                for v, t in time_fit(keras, make, args.steps, log_dir, order).items():
                    fits[m][v].append(t)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nhook: ms per recorded step, minimum over {args.rounds} rounds")
    print("| model | torch ops (step_ops) | keras.ops | saved |")
    print("|---|---:|---:|---:|")
    for m in models:
        ours, theirs = min(hook[m]["torch ops (step_ops)"]), min(hook[m]["keras.ops"])
        print(f"| {m} | {ours:.3f} | {theirs:.3f} | {theirs - ours:.3f} ({theirs / ours:.2f}x) |")
    print(
        f"\nfit with GradientBoard(histogram_freq=1, diagnose=False): ms per step, minimum over "
        f"{args.rounds} rounds; ratio to the plain fit's minimum"
    )
    print("| model | plain fit | board, torch ops | ratio | board, keras.ops | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in models:
        plain = min(fits[m]["plain fit"])
        ours, theirs = min(fits[m]["torch ops (step_ops)"]), min(fits[m]["keras.ops"])
        print(
            f"| {m} | {plain:.2f} | {ours:.2f} | {ours / plain:.3f} | {theirs:.2f} | "
            f"{theirs / plain:.3f} |"
        )


if __name__ == "__main__":
    main()
