"""Train, save, export and serve a digits sequence classifier built from keras_gradkit.

scikit-learn's bundled 8x8 digits (1,797 images, no download) are read as
sequences: row by row (`--mode rows`, 8 steps of 8 features) or pixel by pixel
(`--mode pixels`, 64 steps of 1 feature). The model:

    x (batch, time, features), time unknown
    -> keras.layers.Masking(-1.0)           padded steps hold -1 (digits have all-zero rows)
    -> keras_gradkit.layers.IndRNN          ReLU, |u| <= 2 ** (1 / T) (Li et al. 2018)
    -> keras_gradkit.layers.GroupNorm       statistics over unmasked steps only
    -> keras_gradkit.layers.IndRNN
    -> keras_gradkit.layers.GroupNorm
    -> keras_gradkit.layers.LSTM            chrono gate biases (Tallec & Ollivier 2018)
    -> keras_gradkit.layers.CosineDense     cosine classifier, learned scale, softmax

The steps, each a function below, each checked:

1. train with `ClippedOptimizer(Adam, ClipByGlobalNorm)` and `GradientBoard`;
2. save as `.keras`, reload, check identical predictions;
3. `model.export()` to a SavedModel in `<out>/digits/1` (the numbered
   version folder TensorFlow Serving expects); the signature takes any batch
   size and any sequence length, `(None, None, features)`;
4. serve it in a fresh Python process that imports only TensorFlow
   (`keras` and `keras_gradkit` are blocked from import there) and check its
   test accuracy and predictions against Keras;
5. `saved_model_cli show --all` and `saved_model_cli run --inputs x=FILE.npy`
   (the CLI that ships with TensorFlow) on the SavedModel;
6. variable length: examples cropped to different lengths, padded with the
   mask value into one batch, give the predictions of each example alone,
   unpadded, in Keras and in the served SavedModel.

    python examples/train_export_serve.py                  # rows, 20 epochs: about 1.5 minutes on 2 CPU cores
    python examples/train_export_serve.py --mode pixels    # 64-step sequences, 30 epochs: about 2.5 minutes
    python examples/train_export_serve.py --quick          # tiny model, 2 epochs (what the tests run)
    tensorboard --logdir runs/train_export_serve
"""

import argparse
import json
import math
import numbers
import os
import shutil
import subprocess
import sys
import textwrap
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import keras_gradkit as gk

MODES = {"rows": 8, "pixels": 1}  # features per step
DIGIT_PIXELS = 64
MODEL_NAME = "digits"
TOLERANCE = 1e-5
DEFAULT_EPOCHS = {"rows": 20, "pixels": 30}


def _check(condition, message):
    if not condition:
        raise RuntimeError(message)


# ---------------------------------------------------------------- 0. data
def load_digits_sequences(mode="rows", test_fraction=0.25, seed=0):
    """The bundled digits as sequences, split into train and test sets.

    Args:
        mode: `"rows"` gives `(n, 8, 8)` (8 steps of 8 pixels), `"pixels"`
            gives `(n, 64, 1)`. Defaults to `"rows"`.
        test_fraction: float in (0, 1), the share of images in the test set
            (stratified by class). Defaults to `0.25`.
        seed: int, seed of the split; the same seed gives the same split.
            Defaults to `0`.

    Returns:
        `(x_train, y_train, x_test, y_test)`: float32 pixels in [0, 1] and
        int32 labels 0-9.
    """
    if mode not in MODES:
        raise ValueError(f"Argument `mode` must be one of {sorted(MODES)}. Received: mode={mode!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise ValueError(
            f"Argument `test_fraction` must be a float in (0, 1). Received: test_fraction={test_fraction!r}"
        )
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    features = MODES[mode]
    x = (digits.images / 16.0).astype("float32").reshape(-1, DIGIT_PIXELS // features, features)
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------- 1. model
def build_model(features=8, num_classes=10, units=64, mask_value=-1.0):
    """The sequence classifier: Masking, 2 x (IndRNN, GroupNorm), LSTM, CosineDense.

    The input is `keras.Input((None, features), name="x")`: any sequence
    length. A digit has 64 pixels, so sequences are at most
    `T = 64 // features` steps long; T sets the IndRNN recurrent bound
    `|u| <= 2 ** (1 / T)` (the paper's gamma = 2, projected after every
    update by `keras_gradkit.constraints.MaxAbs`; recurrent weights start in
    U(0, bound)) and the LSTM's chrono initialization (`T_max = T`).
    GroupNorm uses `gcd(units, 8)` groups. The output is class
    probabilities, `(batch, num_classes)`.

    Args:
        features: int dividing 64, pixels per step (8 for rows, 1 for pixels).
        num_classes: int >= 2. Defaults to `10`.
        units: int >= 1, units of each recurrent layer. Defaults to `64`.
        mask_value: float outside [0, 1] (the pixel range: digits have
            all-zero rows, so 0 would mask real steps), the value of padded
            steps. Defaults to `-1.0`.
    """
    for name, value, low in (
        ("features", features, 1),
        ("num_classes", num_classes, 2),
        ("units", units, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(
                f"Argument `{name}` must be an integer >= {low}. Received: {name}={value!r}"
            )
    if DIGIT_PIXELS % features:
        raise ValueError(
            f"Argument `features` must divide {DIGIT_PIXELS} (the pixels of a digit). Received: features={features}"
        )
    if (
        not isinstance(mask_value, (int, float))
        or 0.0 <= mask_value <= 1.0
        or not math.isfinite(mask_value)
    ):
        raise ValueError(
            "Argument `mask_value` must be a finite number outside [0, 1], the pixel range "
            f"(a value inside it would mask real steps). Received: mask_value={mask_value!r}"
        )
    features, num_classes, units = int(features), int(num_classes), int(units)
    timesteps = DIGIT_PIXELS // features
    groups = math.gcd(units, 8)
    inputs = keras.Input((None, features), name="x")
    h = keras.layers.Masking(mask_value=mask_value, name="mask")(inputs)
    for i in (1, 2):
        h = gk.layers.IndRNN(units, timesteps=timesteps, return_sequences=True, name=f"indrnn_{i}")(
            h
        )
        h = gk.layers.GroupNorm(groups=groups, name=f"group_norm_{i}")(h)
    # use_cudnn=False: a SavedModel traced with cuDNN does not run on a CPU (keras#18504).
    h = gk.layers.LSTM(units, chrono_timesteps=max(timesteps, 2), use_cudnn=False, name="lstm")(h)
    outputs = gk.layers.CosineDense(
        num_classes, scale=10.0, learn_scale=True, activation="softmax", name="classifier"
    )(h)
    return keras.Model(inputs, outputs, name="digits_classifier")


# ---------------------------------------------------------------- 2. training
def train(
    model,
    x_train,
    y_train,
    x_test,
    y_test,
    epochs,
    logdir,
    batch_size=32,
    learning_rate=3e-3,
    clip_norm=1.0,
):
    """Compiles with `ClippedOptimizer(Adam, ClipByGlobalNorm)` and fits with
    `GradientBoard` and Keras's `TensorBoard` writing to `logdir`.

    The test set is used as validation data for the curves only (no model
    selection). Returns `{"seconds", "history", "gradient_statistics"}`.
    """
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(schedule),
        gk.clipping.ClipByGlobalNorm(clip_norm),
        record_gradients=True,
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.TensorBoard(logdir),
        gk.callbacks.GradientBoard(logdir, histogram_freq=1, time_probe=(x_test[:16], y_test[:16])),
    ]
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "history": history.history,
        "gradient_statistics": optimizer.gradient_statistics(),
    }


def accuracy(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


# ---------------------------------------------------------------- 3. .keras
def save_and_reload(model, path, x):
    """Saves `model` as `.keras`, loads it back and compares predictions on `x`.

    Returns `(reloaded_model, max_abs_diff)`; the diff must be exactly 0.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    reloaded = keras.saving.load_model(
        path
    )  # keras_gradkit is imported: its classes are registered
    diff = float(np.max(np.abs(reloaded.predict(x, verbose=0) - model.predict(x, verbose=0))))
    return reloaded, diff


# ---------------------------------------------------------------- 4. SavedModel
def export_saved_model(model, export_dir):
    """`model.export(export_dir)` (endpoints `serve` and `serving_default`),
    then reads the signature back.

    Returns `{"input_name", "input_shape", "output_name", "output_shape"}`
    of the `serving_default` signature (shapes with None for unknown sizes).
    """
    import tensorflow as tf

    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)  # a stale variables/ folder must not survive
    model.export(export_dir, format="tf_saved_model", verbose=False)
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    ((input_name, input_spec),) = signature.structured_input_signature[1].items()
    ((output_name, output_spec),) = signature.structured_outputs.items()
    return {
        "input_name": input_name,
        "input_shape": tuple(input_spec.shape.as_list()),
        "output_name": output_name,
        "output_shape": tuple(output_spec.shape.as_list()),
    }


# ---------------------------------------------------------------- 5. serving
# Runs in a fresh interpreter: `keras` and `keras_gradkit` look uninstalled
# there (TensorFlow itself probes for keras at import and copes with its absence).
SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, json, os, sys

    BLOCKED = ("keras", "keras_gradkit")

    class _BlockedLoader(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError(f"{spec.name} is blocked: serving must need only TensorFlow", name=spec.name)

        def exec_module(self, module):
            raise ImportError(f"{module.__name__} is blocked")

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, _BlockedLoader())
            return None

    sys.meta_path.insert(0, _Block())
    import numpy as np
    import tensorflow as tf

    export_dir, labels_path, out_dir, *input_paths = sys.argv[1:]
    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    (input_name, input_spec), = serving.structured_input_signature[1].items()
    (output_name,) = serving.structured_outputs
    outputs = []
    for path in input_paths:
        probabilities = serving(**{input_name: tf.constant(np.load(path))})[output_name].numpy()
        out_path = os.path.join(out_dir, "served_" + os.path.basename(path))
        np.save(out_path, probabilities)
        outputs.append(out_path)
    first = np.load(outputs[0])
    labels = np.load(labels_path)
    report = {
        "accuracy": float(np.mean(np.argmax(first, axis=-1) == labels)),
        "input_name": input_name,
        "input_shape": input_spec.shape.as_list(),
        "outputs": outputs,
        "imported": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }
    print("SERVED " + json.dumps(report))
    """
)


def serve_in_fresh_process(export_dir, inputs, labels, workdir, timeout=300):
    """Serves the SavedModel's `serving_default` signature in a new Python
    process that can import TensorFlow but not `keras` nor `keras_gradkit`.

    Args:
        export_dir: the SavedModel folder.
        inputs: dict `{name: array}`; each array is written to
            `workdir/<name>.npy` and classified in one call.
        labels: labels of the first input; the process prints its accuracy.
        workdir: folder for the `.npy` files.

    Returns:
        `{"accuracy", "input_name", "input_shape", "imported", "seconds",
        "predictions": {name: array}}`.
    """
    os.makedirs(workdir, exist_ok=True)
    paths = []
    for name, array in inputs.items():
        paths.append(os.path.join(workdir, f"{name}.npy"))
        np.save(paths[-1], np.asarray(array, dtype="float32"))
    labels_path = os.path.join(workdir, "labels.npy")
    np.save(labels_path, np.asarray(labels))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_SCRIPT,
            os.path.abspath(export_dir),
            labels_path,
            workdir,
            *paths,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("SERVED ")]
    _check(
        result.returncode == 0 and lines,
        f"The serving process failed (exit code {result.returncode}):\n{result.stderr[-3000:]}",
    )
    report = json.loads(lines[-1][len("SERVED ") :])
    report["predictions"] = {
        name: np.load(path) for name, path in zip(inputs, report.pop("outputs"))
    }
    report["seconds"] = seconds
    return report


# ---------------------------------------------------------------- 6. saved_model_cli
def _saved_model_cli():
    """The `saved_model_cli` of this interpreter's TensorFlow, as a command list."""
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def _run_cli(args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        _saved_model_cli() + args, capture_output=True, text=True, env=env, timeout=timeout
    )
    _check(
        result.returncode == 0,
        f"`saved_model_cli {' '.join(args)}` failed (exit code {result.returncode}):\n{result.stderr[-3000:]}",
    )
    return result.stdout


def saved_model_cli_show(export_dir):
    """The text of `saved_model_cli show --dir export_dir --all`."""
    return _run_cli(["show", "--dir", export_dir, "--all"])


def parse_cli_signature(text, signature="serving_default"):
    """`{"inputs": {key: shape}, "outputs": {key: shape}}` of one signature in
    `saved_model_cli show --all` output; shapes as tuples with -1 for unknown."""
    block = text.split(f"signature_def['{signature}']:", 1)
    _check(
        len(block) == 2,
        f"Signature {signature!r} not found in the saved_model_cli output:\n{text[:2000]}",
    )
    block = block[1].split("signature_def[", 1)[0]
    parsed, section, key = {"inputs": {}, "outputs": {}}, None, None
    for line in block.splitlines():
        line = line.strip()
        for name in ("inputs", "outputs"):
            if line.startswith(f"{name}['"):
                section, key = name, line[len(name) + 2 : line.index("']")]
        if line.startswith("shape:") and section is not None:
            shape = line[len("shape:") :].strip().strip("()").rstrip(",")
            parsed[section][key] = tuple(int(d) for d in shape.split(",") if d.strip())
    return parsed


def saved_model_cli_run(export_dir, input_name, npy_path, outdir):
    """`saved_model_cli run ... --inputs <input_name>=<npy_path> --outdir <outdir>`.

    Returns `(stdout, {output key: array})`, the arrays read from the `.npy`
    files the CLI writes.
    """
    os.makedirs(outdir, exist_ok=True)
    stdout = _run_cli(
        [
            "run",
            "--dir",
            export_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"{input_name}={npy_path}",
            "--outdir",
            outdir,
            "--overwrite",
        ]
    )
    outputs = {}
    for line in stdout.splitlines():
        if line.startswith("Output ") and " is saved to " in line:
            key, path = line[len("Output ") :].split(" is saved to ")
            outputs[key] = np.load(path.strip())
    return stdout, outputs


# ---------------------------------------------------------------- 7. variable length
def variable_length_batch(x, lengths, mask_value=-1.0):
    """Crops `x[i]` to its first `lengths[i]` steps and pads them, after the
    end, with `mask_value` into one batch.

    Returns `(padded (n, max(lengths), features), [cropped x[i], ...])`.
    """
    lengths = [int(n) for n in lengths]
    _check(
        len(lengths) == len(x) and min(lengths) >= 1 and max(lengths) <= x.shape[1],
        f"Lengths must be in [1, {x.shape[1]}], one per example. Received: lengths={lengths}",
    )
    singles = [np.asarray(x[i, :n], dtype="float32") for i, n in enumerate(lengths)]
    padded = np.full((len(x), max(lengths), x.shape[2]), mask_value, dtype="float32")
    for i, single in enumerate(singles):
        padded[i, : len(single)] = single
    return padded, singles


def default_lengths(timesteps, count=6):
    """`count` lengths spread from 3/8 of the sequence to all of it (3..8 rows, 24..64 pixels)."""
    return np.linspace(max(3 * timesteps // 8, 1), timesteps, count).round().astype(int)


def variable_length_check(predict, padded, singles):
    """Max abs difference between `predict(padded)` and each
    `predict(single[None])`, the example alone at its own length."""
    batch = np.asarray(predict(padded))
    alone = np.concatenate([np.asarray(predict(s[None])) for s in singles])
    return float(np.max(np.abs(batch - alone)))


# ---------------------------------------------------------------- main
def rest_request(example, path):
    """Writes the TensorFlow Serving REST body for one example to `path`."""
    body = {"signature_name": "serving_default", "instances": [np.asarray(example).tolist()]}
    with open(path, "w") as f:
        json.dump(body, f)
    return body


def positive_int(text):
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="rows",
        help="rows: 8 steps of 8 pixels; pixels: 64 steps of 1 pixel",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"default {DEFAULT_EPOCHS['rows']} (rows), {DEFAULT_EPOCHS['pixels']} (pixels), 2 with --quick",
    )
    parser.add_argument(
        "--units",
        type=positive_int,
        default=None,
        help="recurrent units (default 64, 16 with --quick)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--clip-norm", type=float, default=1.0, help="ClipByGlobalNorm threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--logdir", default=None, help="TensorBoard logs (default runs/train_export_serve/<mode>)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="model files, SavedModel and .npy files (default runs/train_export_serve/<mode>/artifacts)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model trained for 2 epochs, for tests"
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else DEFAULT_EPOCHS[args.mode]
    if args.units is None:
        args.units = 16 if args.quick else 64
    if args.logdir is None:
        args.logdir = os.path.join("runs", "train_export_serve", args.mode)
    if args.out is None:
        args.out = os.path.join(args.logdir, "artifacts")
    if not args.learning_rate > 0 or not args.clip_norm > 0:
        parser.error(
            f"--learning-rate and --clip-norm must be positive, got {args.learning_rate} and {args.clip_norm}"
        )
    return args


def main(argv=None):
    """Runs every step and returns a dict of the measured numbers."""
    args = parse_args(argv)
    total_start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_digits_sequences(args.mode, seed=args.seed)
    timesteps, features = x_train.shape[1:]
    print(
        f"data   | {args.mode}: {len(x_train)} train / {len(x_test)} test sequences of {timesteps} steps x {features} features",
        flush=True,
    )

    keras.utils.set_random_seed(args.seed)
    model = build_model(features=features, units=args.units)
    trained = train(
        model,
        x_train,
        y_train,
        x_test,
        y_test,
        args.epochs,
        args.logdir,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        clip_norm=args.clip_norm,
    )
    probabilities = model.predict(x_test, batch_size=256, verbose=0)
    keras_accuracy = accuracy(probabilities, y_test)
    stats = trained["gradient_statistics"]
    print(
        f"train  | {args.epochs} epochs, {args.units} units: {trained['seconds']:.1f} s, test accuracy {keras_accuracy:.4f}, "
        f"last global grad norm {stats['global_norm']:.3g} (clipped {int(stats['clipped_steps'])}/{int(stats['steps'])} steps)",
        flush=True,
    )

    os.makedirs(args.out, exist_ok=True)
    keras_path = os.path.join(args.out, "digits.keras")
    reloaded, reload_diff = save_and_reload(model, keras_path, x_test)
    reloaded_accuracy = accuracy(reloaded.predict(x_test, batch_size=256, verbose=0), y_test)
    _check(
        reload_diff == 0.0,
        f"The reloaded .keras model differs from the trained one: max abs diff {reload_diff}",
    )
    print(
        f"keras  | saved {keras_path}, reloaded: accuracy {reloaded_accuracy:.4f}, max abs diff {reload_diff:.1e}",
        flush=True,
    )

    export_dir = os.path.join(args.out, MODEL_NAME, "1")
    signature = export_saved_model(model, export_dir)
    _check(
        signature["input_shape"] == (None, None, features),
        f"The exported signature should accept (None, None, {features}). Received: {signature}",
    )
    print(
        f"export | {export_dir}: serving_default {signature['input_name']}{signature['input_shape']} -> "
        f"{signature['output_name']}{signature['output_shape']}",
        flush=True,
    )

    padded, singles = variable_length_batch(x_test[:6], default_lengths(timesteps))
    keras_varlen = variable_length_check(lambda a: model(a, training=False), padded, singles)
    inputs = {"x_test": x_test, "varlen_padded": padded}
    inputs.update({f"varlen_single_{i}": s[None] for i, s in enumerate(singles)})
    served = serve_in_fresh_process(export_dir, inputs, y_test, os.path.join(args.out, "serving"))
    served_diff = float(np.max(np.abs(served["predictions"]["x_test"] - probabilities)))
    served_alone = np.concatenate(
        [served["predictions"][f"varlen_single_{i}"] for i in range(len(singles))]
    )
    served_varlen = float(np.max(np.abs(served["predictions"]["varlen_padded"] - served_alone)))
    served_vs_keras_varlen = float(
        np.max(np.abs(served["predictions"]["varlen_padded"] - model(padded).numpy()))
    )
    print(
        f"serve  | fresh process, TensorFlow only (imported keras modules: {served['imported'] or 'none'}), "
        f"{served['seconds']:.1f} s: accuracy {served['accuracy']:.4f}, max abs diff to Keras {served_diff:.1e}",
        flush=True,
    )
    _check(not served["imported"], f"The serving process imported {served['imported']}")
    _check(
        served_diff <= TOLERANCE,
        f"Served predictions differ from Keras by {served_diff} > {TOLERANCE}",
    )
    _check(
        served["accuracy"] == keras_accuracy,
        f"Served accuracy {served['accuracy']} != Keras accuracy {keras_accuracy}",
    )

    show = saved_model_cli_show(export_dir)
    with open(os.path.join(args.out, "saved_model_cli_show.txt"), "w") as f:
        f.write(show)
    cli_signature = parse_cli_signature(show)
    _check(
        cli_signature["inputs"].get(signature["input_name"]) == (-1, -1, features),
        f"saved_model_cli show: unexpected serving_default inputs {cli_signature['inputs']}",
    )
    print(
        f"cli    | saved_model_cli show --dir {export_dir} --all: serving_default inputs {cli_signature['inputs']}, "
        f"outputs {cli_signature['outputs']}",
        flush=True,
    )
    stdout, cli_outputs = saved_model_cli_run(
        export_dir,
        signature["input_name"],
        os.path.join(args.out, "serving", "x_test.npy"),
        os.path.join(args.out, "cli_outputs"),
    )
    cli_probabilities = cli_outputs[signature["output_name"]]
    cli_accuracy = accuracy(cli_probabilities, y_test)
    cli_diff = float(np.max(np.abs(cli_probabilities - probabilities)))
    _check(
        cli_diff <= TOLERANCE,
        f"saved_model_cli run output differs from Keras by {cli_diff} > {TOLERANCE}",
    )
    print(
        f"cli    | saved_model_cli run --inputs {signature['input_name']}=x_test.npy: accuracy {cli_accuracy:.4f}, "
        f"max abs diff to Keras {cli_diff:.1e}; first lines:",
        flush=True,
    )
    print(textwrap.indent("\n".join(stdout.strip().splitlines()[:3]), "       | "), flush=True)

    lengths = [len(s) for s in singles]
    print(
        f"varlen | lengths {lengths} padded with -1 to {padded.shape[1]}: batch vs each alone, max abs diff "
        f"Keras {keras_varlen:.1e}, served {served_varlen:.1e}; served vs Keras {served_vs_keras_varlen:.1e}",
        flush=True,
    )
    _check(
        max(keras_varlen, served_varlen, served_vs_keras_varlen) <= TOLERANCE,
        "Padded batches do not match the unpadded examples within the tolerance",
    )

    request_path = os.path.join(args.out, "rest_request.json")
    rest_request(x_test[0], request_path)
    total = time.perf_counter() - total_start
    abs_export = os.path.abspath(os.path.dirname(export_dir))
    print(
        textwrap.dedent(f"""
        done in {total:.0f} s. TensorBoard (loss, accuracy, gradient norms and histograms, time gradient):
            {os.path.join(os.path.dirname(sys.executable), "tensorboard")} --logdir {args.logdir}
        TensorFlow Serving (the SavedModel is version 1 of model "{MODEL_NAME}"):
            docker run -p 8501:8501 --mount type=bind,source={abs_export},target=/models/{MODEL_NAME} -e MODEL_NAME={MODEL_NAME} -t tensorflow/serving
            curl -d @{os.path.abspath(request_path)} -X POST http://localhost:8501/v1/models/{MODEL_NAME}:predict
        The request body ({request_path}) is {{"signature_name": "serving_default", "instances": [<one {timesteps}x{features} sequence>]}}; label {int(y_test[0])}.""")
    )
    return {
        "mode": args.mode,
        "epochs": args.epochs,
        "units": args.units,
        "train_seconds": trained["seconds"],
        "total_seconds": total,
        "keras_accuracy": keras_accuracy,
        "reloaded_accuracy": reloaded_accuracy,
        "reload_max_abs_diff": reload_diff,
        "served_accuracy": served["accuracy"],
        "served_max_abs_diff": served_diff,
        "served_imported": served["imported"],
        "cli_accuracy": cli_accuracy,
        "cli_max_abs_diff": cli_diff,
        "varlen_keras_max_abs_diff": keras_varlen,
        "varlen_served_max_abs_diff": served_varlen,
        "varlen_served_vs_keras_max_abs_diff": served_vs_keras_varlen,
        "signature": signature,
        "export_dir": export_dir,
        "keras_path": keras_path,
        "logdir": args.logdir,
        "global_norm": stats["global_norm"],
    }


if __name__ == "__main__":
    main()
