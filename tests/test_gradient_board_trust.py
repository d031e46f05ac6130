"""GradientBoard can be trusted: it never replaces the model's optimizer, what
Keras saves (and what a fresh process loads back) is the same with or without
it, a run killed and resumed with BackupAndRestore ends where an uninterrupted
one does, the train function is traced once, and the statistics it writes are
those of the real steps, checked against NumPy. Runs on every backend."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from test_gradient_board import (
    data,
    dense_model,
    norm,
    numpy_dense_gradients,
    read_events,
    scalar,
    steps,
)

import keras_gradkit as gk
from keras_gradkit import clipping
from keras_gradkit.optimizers import ClippedOptimizer

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLES = ("net/hidden/kernel", "net/hidden/bias", "net/out/kernel", "net/out/bias")
SKIPPING = "Skipping variable loading"


# ----------------------------------------------------------------- helpers
def start_python(script, *args, env=None):
    """Starts `script` in a fresh interpreter on this backend (`env`: more
    environment variables); `finish` waits for it."""
    env = dict(
        os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, **(env or {})
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process, timeout=300):
    """Waits for a `start_python` process (killed on timeout); its `CompletedProcess`."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_pythons(*calls, timeout=300):
    """Runs each `(script, *args)` of `calls` in a fresh interpreter on this
    backend, all at the same time; returns their `CompletedProcess`es."""
    processes = [start_python(script, *args) for script, *args in calls]
    try:
        return [finish(process, timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def run_python(script, *args, timeout=300, env=None):
    """Runs `script` in a fresh interpreter on this backend (`env`: more
    environment variables)."""
    return finish(start_python(script, *args, env=env), timeout)


def run_in_this_process(script, function, *args):
    """Runs `function(*args)` of `script` (a script for `start_python`, its
    `__main__` block left out) here: the reference run of a kill-and-resume
    test, which a fresh interpreter would only make slower (a second import
    of the backend); its own seeds make it start as the script does."""
    namespace = {"__name__": "in_this_process"}
    exec(script, namespace)
    return namespace[function](*args)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def iterations(optimizer):
    return int(to_numpy(optimizer.iterations))


def values(events, tag):
    return [float(v) for _, v in events[tag][1]]


def numpy_sgd(weights, x, y, lr, epochs, clipnorm=None):
    """Full-batch SGD in float64: per step the weights before it, the raw
    gradient and the applied (globally clipped) one; and the final weights."""
    weights = [np.asarray(w, "float64") for w in weights]
    history = []
    for _ in range(epochs):
        grads = numpy_dense_gradients(weights, x, y)
        applied = grads
        if clipnorm is not None:
            applied = [g * clipnorm / max(norm(grads), clipnorm) for g in grads]
        new = [w - lr * g for w, g in zip(weights, applied)]
        history.append((weights, grads, applied, new))
        weights = new
    return history, weights


def all_scalar_tags(events):
    return {tag for tag, (plugin, _) in events.items() if plugin == "scalars"}


class OptimizerChecker(keras.callbacks.Callback):
    """Placed after GradientBoard: at every batch and epoch end, the model's
    optimizer is the user's object, of the user's class, with the user's variables."""

    def __init__(self, user_optimizer):
        super().__init__()
        self.user_optimizer = user_optimizer
        self.paths = [v.path for v in user_optimizer.variables]
        self.checks = 0
        self.problems = []

    def _check(self, where):
        self.checks += 1
        optimizer = self.model.optimizer
        if optimizer is not self.user_optimizer:
            self.problems.append(
                f"{where}: model.optimizer is {optimizer!r}, not the user's {self.user_optimizer!r}"
            )
        if type(optimizer) is not type(self.user_optimizer):
            self.problems.append(
                f"{where}: type {type(optimizer).__name__}, not {type(self.user_optimizer).__name__}"
            )
        paths = [v.path for v in optimizer.variables]
        if paths != self.paths:
            self.problems.append(f"{where}: variables {paths} != {self.paths}")

    def on_train_batch_begin(self, batch, logs=None):
        self._check(f"on_train_batch_begin({batch})")

    def on_train_batch_end(self, batch, logs=None):
        self._check(f"on_train_batch_end({batch})")

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"on_epoch_end({epoch})")


class Counting(keras.layers.Layer):
    """Passes its input through and counts its training calls: once per
    trace of the train step on TensorFlow and JAX, once per step on PyTorch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train_calls = 0

    def call(self, x, training=None):
        if training:
            self.train_calls += 1
        return x


# What test_saving_* build, here and in the fresh process that loads.
_BUILD = textwrap.dedent(
    """
    def build(case):
        import keras
        import keras_gradkit as gk
        precision, optimizer = case.split("-")
        keras.utils.clear_session()
        keras.config.set_dtype_policy("mixed_float16" if precision == "mixed" else "float32")
        keras.utils.set_random_seed(7)
        model = keras.Sequential(
            [keras.Input((5, 2)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(2, name="out")], name="net"
        )
        if optimizer == "adam":
            opt = keras.optimizers.Adam(0.01)
        else:
            opt = gk.optimizers.ClippedOptimizer(keras.optimizers.Adam(0.01), gk.clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse")
        return model


    def checksum(variables):
        import keras, numpy as np
        out = []
        for v in variables:
            a = np.asarray(keras.ops.convert_to_numpy(v), "float64")
            out.append([v.name, list(a.shape), float(a.sum()), float(np.square(a).sum())])
        return out
    """
)
_LOAD = _BUILD + textwrap.dedent(
    """
    import json, sys, warnings
    import keras
    import keras_gradkit  # noqa: F401  (registers ClippedOptimizer and the policies)

    root, cases = sys.argv[1], sys.argv[2:]
    report = {}
    for case in cases:
        for run in ("plain", "board"):
            for name in ("final.keras", "ckpt.keras", "ckpt.weights.h5"):
                path = f"{root}/{case}/{run}/{name}"
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if name.endswith(".keras"):
                        # Keras re-creates the LossScaleOptimizer of a mixed_float16 model only under that
                        # global policy (otherwise its variables are skipped, with or without keras_gradkit).
                        keras.config.set_dtype_policy("mixed_float16" if case.startswith("mixed") else "float32")
                        model = keras.saving.load_model(path)
                    else:
                        model = build(case)
                        model.optimizer.build(model.trainable_variables)
                        model.load_weights(path)
                report[f"{case}/{run}/{name}"] = {
                    "optimizer": type(model.optimizer).__name__,
                    "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                    "optimizer_variables": checksum(model.optimizer.variables),
                    "weights": checksum(model.weights),
                    "warnings": [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)],
                }
    print("REPORT" + json.dumps(report))
    """
)


# `train(root, cases)` trains each case without and with GradientBoard (2
# epochs, 4 steps, two ModelCheckpoints), saves the model, and writes what
# the model holds (`trained.npz`: the optimizer's and the model's variables
# by position; `trained.json`: their names and paths, the optimizer's type).
_TRAIN = _BUILD + textwrap.dedent(
    """
    import json, os, sys
    import keras, numpy as np
    import keras_gradkit as gk


    def train(root, cases):
        rng = np.random.default_rng(4)
        x, y = rng.normal(size=(16, 5, 2)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
        for case in cases:
            for run in ("plain", "board"):
                directory = os.path.join(root, case, run)
                os.makedirs(directory, exist_ok=True)
                model = build(case)
                callbacks = [
                    keras.callbacks.ModelCheckpoint(os.path.join(directory, "ckpt.keras")),
                    keras.callbacks.ModelCheckpoint(os.path.join(directory, "ckpt.weights.h5"), save_weights_only=True),
                ]
                if run == "board":
                    callbacks.insert(0, gk.callbacks.GradientBoard(os.path.join(directory, "logs"), histogram_freq=1))
                model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
                model.save(os.path.join(directory, "final.keras"))
                arrays = {}
                for group, variables in (("optimizer", model.optimizer.variables), ("weights", model.weights)):
                    for i, v in enumerate(variables):
                        arrays[f"{group}/{i}"] = np.asarray(keras.ops.convert_to_numpy(v))
                np.savez(os.path.join(directory, "trained.npz"), **arrays)
                meta = {
                    "optimizer_type": type(model.optimizer).__name__,
                    "optimizer": [[v.name, list(v.shape)] for v in model.optimizer.variables],
                    "checksum": checksum(model.optimizer.variables),
                    "weights": [w.path for w in model.weights],
                    "paths": [v.path for v in model.optimizer.variables],
                }
                with open(os.path.join(directory, "trained.json"), "w") as f:
                    json.dump(meta, f)
    """
)

SAVING_CASES = ("float32-adam", "float32-clipped", "mixed-adam", "mixed-clipped")


def _train_saving_cases(root):
    """Runs `train` here, or in a fresh process where `conftest.py` set XLA
    flags for speed (JAX): whether GradientBoard changes the numbers of a
    mixed-precision model is a question about the code users run, and
    XLA's older CPU emitters round the float16 intermediates of a fused
    step differently when the step also returns its gradients."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if "xla_cpu_use_fusion_emitters" not in f]
    if kept == flags:
        namespace = {}
        exec(_TRAIN, namespace)
        namespace["train"](str(root), SAVING_CASES)
        keras.config.set_dtype_policy("float32")
        return
    script = _TRAIN + "\ntrain(sys.argv[1], sys.argv[2:])\nprint('TRAINED')\n"
    result = run_python(script, root, *SAVING_CASES, env={"XLA_FLAGS": " ".join(kept)})
    assert result.returncode == 0 and "TRAINED" in result.stdout, result.stderr[-4000:]


def _trained(directory):
    with open(os.path.join(directory, "trained.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(directory, "trained.npz")) as arrays:
        optimizer = [
            (name, tuple(shape), arrays[f"optimizer/{i}"])
            for i, (name, shape) in enumerate(meta["optimizer"])
        ]
        weights = [(path, arrays[f"weights/{i}"]) for i, path in enumerate(meta["weights"])]
    return dict(meta, optimizer=optimizer, weights=weights)


@pytest.fixture(scope="module")
def saved_with_and_without_the_board(tmp_path_factory):
    """Each of SAVING_CASES trained and saved without and with GradientBoard
    (`<root>/<case>/plain`, `<root>/<case>/board`): what the models held after training, and the report of another fresh
    process that loaded back every file of every case (one process for all
    cases: a process per case would import the backend again each time and
    prove nothing more)."""
    root = tmp_path_factory.mktemp("saving")
    _train_saving_cases(root)
    trained = {
        (case, run): _trained(root / case / run)
        for case in SAVING_CASES
        for run in ("plain", "board")
    }
    return root, trained, run_python(_LOAD, root, *SAVING_CASES)


def assert_same_checksums(got, want, what, names=True):
    if names:
        assert [g[0] for g in got] == [w[0] for w in want], what
    assert [g[1] for g in got] == [w[1] for w in want], what
    np.testing.assert_allclose(
        [g[2:] for g in got], [w[2:] for w in want], rtol=1e-6, atol=1e-6, err_msg=what
    )


# ------------------------------------------------------------------- tests
class TestGradientBoardTrust:
    # 1. The optimizer is never replaced, not even for a moment.
    @pytest.mark.parametrize("case", ["adam", "mixed_float16", "mixed_float16_clipped"])
    def test_model_optimizer_stays_the_users_object_during_fit(self, tmp_path, case):
        if case.startswith("mixed"):
            keras.config.set_dtype_policy("mixed_float16")
        x, y = data(n=16, scale=1.0)
        model = dense_model()
        given = keras.optimizers.Adam(0.01)
        if case.endswith("clipped"):
            given = ClippedOptimizer(given, clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=given, loss="mse")
        user_opt = model.optimizer
        if case.startswith("mixed"):
            assert isinstance(user_opt, keras.optimizers.LossScaleOptimizer)
            assert user_opt.inner_optimizer is given
        user_opt.build(model.trainable_variables)
        before = [v.path for v in user_opt.variables]
        board = gk.callbacks.GradientBoard(tmp_path, histogram_freq=1)
        checker = OptimizerChecker(user_opt)
        model.fit(
            x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[board, checker]
        )
        model.fit(
            x,
            y,
            batch_size=4,
            initial_epoch=2,
            epochs=3,
            verbose=0,
            shuffle=False,
            callbacks=[board, checker],
        )
        assert checker.problems == []
        assert checker.checks == 3 * (2 * 4 + 1)  # 12 batches, begin and end, and 3 epoch ends
        assert model.optimizer is user_opt
        assert [v.path for v in model.optimizer.variables] == before
        for opt in (user_opt, getattr(user_opt, "inner_optimizer", None), given):
            if opt is not None:
                assert "apply" not in opt.__dict__, type(opt).__name__
                assert "stateless_apply" not in opt.__dict__, type(opt).__name__
        assert iterations(user_opt) == 12
        assert steps(read_events(tmp_path), "gradient_norm/global") == [0, 1, 2]

    # 2. What Keras saves is the same with or without GradientBoard.
    @pytest.mark.parametrize("case", SAVING_CASES)
    def test_saved_and_reloaded_state_is_the_same_with_or_without_the_board(
        self, saved_with_and_without_the_board, case
    ):
        root, trained, result = saved_with_and_without_the_board
        plain, board = trained[case, "plain"], trained[case, "board"]
        if case.startswith("mixed"):
            assert board["optimizer_type"] == "LossScaleOptimizer"
        assert [o[:2] for o in board["optimizer"]] == [o[:2] for o in plain["optimizer"]]
        for (name, _, got), (_, _, want) in zip(board["optimizer"], plain["optimizer"]):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
        assert [path for path, _ in board["weights"]] == [path for path, _ in plain["weights"]]
        for (path, got), (_, want) in zip(board["weights"], plain["weights"]):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=path)
        assert "gradient_norm/global" in read_events(root / case / "board" / "logs")

        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads(result.stdout.split("REPORT", 1)[1])
        assert {key: entry["warnings"] for key, entry in report.items() if entry["warnings"]} == {}
        assert SKIPPING not in result.stderr, result.stderr[-4000:]
        for name in ("final.keras", "ckpt.keras", "ckpt.weights.h5"):
            reference, loaded = report[f"{case}/plain/{name}"], report[f"{case}/board/{name}"]
            assert loaded["optimizer"] == reference["optimizer"] == plain["optimizer_type"], name
            assert loaded["iterations"] == reference["iterations"] == 4, name
            assert_same_checksums(
                loaded["optimizer_variables"], reference["optimizer_variables"], f"board/{name}"
            )
            assert_same_checksums(
                loaded["optimizer_variables"],
                plain["checksum"],
                f"board/{name} vs in-process",
                names=False,
            )  # Keras names a loaded model's slots without the model's name
            assert_same_checksums(loaded["weights"], reference["weights"], f"board/{name} weights")

    @pytest.mark.parametrize("case", SAVING_CASES)
    def test_optimizer_variable_paths_are_the_same_with_or_without_the_board(
        self, saved_with_and_without_the_board, case
    ):
        # Keras saves optimizer variables by position, not by path, but the
        # paths are what users (and GradientBoard's tags) see.
        _, trained, _ = saved_with_and_without_the_board
        assert trained[case, "board"]["paths"] == trained[case, "plain"]["paths"]

    # 3. Killed and resumed with BackupAndRestore, the same end as without
    # either: test_gradient_board_workflow.py's preemption test (its run
    # killed mid-epoch with SIGKILL, compared with uninterrupted runs with
    # and without the board).

    # 4. Traced once; a re-compiled optimizer is recorded.
    def test_train_function_is_traced_once_and_a_recompiled_optimizer_is_recorded(self, tmp_path):
        x, y = data(n=8)
        keras.utils.set_random_seed(3)
        counter = Counting(name="count")
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="tanh", name="hidden"),
                counter,
                keras.layers.Dense(2, name="out"),
            ],
            name="net",
        )
        lr = 0.1
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        # No checks: their forward pass over the first batch calls the layers
        # too (traced once per model, eagerly on PyTorch); this counts the
        # train function's traces.
        board_a = gk.callbacks.GradientBoard(tmp_path / "a", histogram_freq=1, diagnose=False)
        board_b = gk.callbacks.GradientBoard(tmp_path / "b", histogram_freq=1, diagnose=False)
        sequence = [None, board_a, board_a, None, board_b, None, "compile", board_a, None]
        weights = [w.astype("float64") for w in model.get_weights()]
        traces, expected = [], {}
        epoch = 0
        for item in sequence:
            if item == "compile":
                lr = 0.05
                new_optimizer = keras.optimizers.SGD(lr)
                model.compile(optimizer=new_optimizer, loss="mse")
                continue
            before = counter.train_calls
            # One step per fit (one batch), each fit one epoch further on.
            model.fit(
                x,
                y,
                batch_size=8,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                shuffle=False,
                callbacks=[] if item is None else [item],
            )
            traces.append(counter.train_calls - before)
            grads = numpy_dense_gradients(weights, x, y)
            new = [w - lr * g for w, g in zip(weights, grads)]
            if item is not None:
                expected[(item.log_dir, epoch)] = (
                    norm(grads),
                    lr * np.linalg.norm(grads[0]) / np.linalg.norm(new[0]),
                )
            weights = new
            epoch += 1
        assert model.optimizer is new_optimizer
        assert iterations(new_optimizer) == 2
        for got, want in zip(model.get_weights(), weights):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        events = {str(d): read_events(d) for d in (tmp_path / "a", tmp_path / "b")}
        assert steps(events[str(tmp_path / "a")], "gradient_norm/global") == [1, 2, 6]
        assert steps(events[str(tmp_path / "b")], "gradient_norm/global") == [4]
        for (log_dir, step), (global_norm, ratio) in expected.items():
            ev = events[log_dir]
            index = steps(ev, "gradient_norm/global").index(step)
            assert scalar(ev, "gradient_norm/global", index) == pytest.approx(
                global_norm, rel=1e-5
            ), (log_dir, step)
            # The ratio of epoch 6 is that of the new optimizer's step (lr 0.05).
            got = scalar(ev, "update_ratio/net/hidden/kernel", index)
            assert got == pytest.approx(ratio, rel=1e-4), (log_dir, step)
        if BACKEND == "torch":  # eager: the layer runs at every step, there are no traces to count
            assert traces == [1] * len(traces)
            return
        # plain, A (added), A (stays), plain (removed), B (after A), plain, [compile], A, plain
        assert traces[0] >= 1, traces
        assert traces[1] <= 1, f"adding the board traced {traces[1]} times: {traces}"
        assert traces[2] == 0, f"the same board again retraced: {traces}"
        assert traces[3] <= 1, f"removing the board traced {traces[3]} times: {traces}"
        assert traces[4] == 0, f"a new board after the first retraced: {traces}"
        assert traces[5] <= 1, f"removing the board traced {traces[5]} times: {traces}"
        assert traces[6] <= 1, f"the board after a re-compile traced {traces[6]} times: {traces}"
        assert traces[7] <= 1, f"a plain fit after a re-compile traced {traces[7]} times: {traces}"

    # 5. Two boards in consecutive fits.
    def test_two_boards_in_consecutive_fits_each_see_their_own_steps(self, tmp_path):
        x, y = data(n=8)
        model = dense_model()
        lr = 0.1
        w0 = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        board_a = gk.callbacks.GradientBoard(tmp_path / "a")
        board_b = gk.callbacks.GradientBoard(tmp_path / "b")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[board_a])
        model.fit(x, y, batch_size=8, initial_epoch=2, epochs=4, verbose=0, callbacks=[board_b])
        history, final = numpy_sgd(w0, x, y, lr, 4)
        a, b = read_events(tmp_path / "a"), read_events(tmp_path / "b")
        assert set(a) == set(b)
        assert "gradients/net/out/kernel" in a
        for tag in a:
            assert steps(a, tag) == [0, 1], tag
            assert steps(b, tag) == [2, 3], tag
        np.testing.assert_allclose(
            values(a, "gradient_norm/global"), [norm(h[1]) for h in history[:2]], rtol=1e-5
        )
        # B's first epoch: the gradient at the weights A's fit left.
        np.testing.assert_allclose(
            values(b, "gradient_norm/global"), [norm(h[1]) for h in history[2:]], rtol=1e-5
        )
        for path, i in zip(VARIABLES, range(4)):
            np.testing.assert_allclose(
                values(b, f"gradient_norm/{path}"),
                [np.linalg.norm(h[1][i]) for h in history[2:]],
                rtol=1e-5,
                err_msg=path,
            )
        assert values(b, "clipping/skipped_steps") == [0.0, 0.0]
        for got, want in zip(model.get_weights(), final):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # 6. The statistics are those of the real steps.
    def test_scalars_are_those_of_each_real_sgd_step(self, tmp_path):
        x, y = data(n=8)
        model = dense_model()
        lr = 0.1
        w0 = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, diagnose=False)],
        )
        history, _ = numpy_sgd(w0, x, y, lr, 3)
        events = read_events(tmp_path)
        assert "clipping/threshold" not in events
        np.testing.assert_allclose(
            values(events, "gradient_norm/global"), [norm(h[1]) for h in history], rtol=1e-5
        )
        np.testing.assert_allclose(
            values(events, "gradient_norm/global_clipped"), [norm(h[1]) for h in history], rtol=1e-5
        )
        for i, path in enumerate(VARIABLES):
            np.testing.assert_allclose(
                values(events, f"gradient_norm/{path}"),
                [np.linalg.norm(h[1][i]) for h in history],
                rtol=1e-5,
                err_msg=path,
            )
            ratios = [np.linalg.norm(lr * h[1][i]) / np.linalg.norm(h[3][i]) for h in history]
            np.testing.assert_allclose(
                values(events, f"update_ratio/{path}"), ratios, rtol=1e-4, err_msg=path
            )

    def test_keras_global_clipnorm_is_reported(self, tmp_path):
        x, y = data(n=8)
        model = dense_model()
        lr, clip = 0.1, 0.05
        w0 = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(lr, global_clipnorm=clip), loss="mse")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, diagnose=False)],
        )
        history, final = numpy_sgd(w0, x, y, lr, 2, clipnorm=clip)
        assert all(norm(h[1]) > clip for h in history)  # every step is clipped
        events = read_events(tmp_path)
        assert values(events, "clipping/threshold") == pytest.approx([clip, clip])
        clipped = values(events, "gradient_norm/global_clipped")
        assert all(c <= clip * (1 + 1e-6) for c in clipped), clipped  # float32 rounding of the norm
        assert clipped == pytest.approx([clip, clip], rel=1e-5)
        np.testing.assert_allclose(
            values(events, "gradient_norm/global"), [norm(h[1]) for h in history], rtol=1e-5
        )
        assert values(events, "clipping/clipped_fraction") == [1.0, 1.0]
        ratios = [np.linalg.norm(lr * h[2][0]) / np.linalg.norm(h[3][0]) for h in history]
        np.testing.assert_allclose(
            values(events, "update_ratio/net/hidden/kernel"), ratios, rtol=1e-4
        )
        for got, want in zip(model.get_weights(), final):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # 7. The latest statistics are not saved.
    @pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
    def test_clipped_optimizer_statistics_are_nan_after_loading_until_the_next_update(
        self, tmp_path, precision
    ):
        keras.config.set_dtype_policy(precision)
        x, y = data(n=8, scale=1.0)
        model = dense_model()
        model.compile(
            optimizer=ClippedOptimizer(keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(1.0)),
            loss="mse",
        )
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path / "logs", diagnose=False)],
        )
        path = tmp_path / "m.keras"
        model.save(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reloaded = keras.saving.load_model(path)
        assert [str(w.message) for w in caught if SKIPPING in str(w.message)] == []
        opt = reloaded.optimizer
        if precision == "mixed_float16":
            assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
            opt = opt.inner_optimizer
        assert isinstance(opt, ClippedOptimizer)
        stats = opt.gradient_statistics()
        assert np.isnan(stats["global_norm"]), stats
        assert np.isnan(stats["global_norm_clipped"]), stats
        assert stats["steps"] == 4.0, stats  # the saved counters
        weights = reloaded.get_weights()
        reloaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
        stats = opt.gradient_statistics()
        assert np.isfinite(stats["global_norm"]), stats
        assert stats["steps"] == 5.0, stats
        expected = norm(numpy_dense_gradients(weights, x, y))
        rel = 1e-5 if precision == "float32" else 2e-2
        assert stats["global_norm"] == pytest.approx(expected, rel=rel)

    # 8. Mixed precision.
    def test_loss_scale_is_the_scale_of_each_step(self, tmp_path):
        keras.config.set_dtype_policy("mixed_float16")
        x, y = data(n=8, scale=1.0)
        model = dense_model()
        opt = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1), initial_scale=64.0, dynamic_growth_steps=2
        )
        model.compile(optimizer=opt, loss="mse")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path)],
        )
        assert model.optimizer is opt
        assert iterations(opt) == 4  # all steps finite
        events = read_events(tmp_path)
        assert steps(events, "mixed_precision/loss_scale") == [0, 1, 2, 3]
        # The scale doubles after every 2 finite steps: each step is written with the scale it used.
        assert values(events, "mixed_precision/loss_scale") == [64.0, 64.0, 128.0, 128.0]
        assert float(to_numpy(opt.dynamic_scale)) == 256.0
        assert values(events, "clipping/skipped_steps") == [0.0] * 4

    def test_loss_scale_of_the_default_loss_scale_optimizer(self, tmp_path):
        keras.config.set_dtype_policy("mixed_float16")
        x, y = data(n=8, scale=1.0)
        model = dense_model()
        model.compile(optimizer="sgd", loss="mse")
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path)],
        )
        assert (
            iterations(model.optimizer) == 4
        )  # all steps finite: far fewer than dynamic_growth_steps
        scale = float(to_numpy(model.optimizer.dynamic_scale))
        events = read_events(tmp_path)
        logged = values(events, "mixed_precision/loss_scale")
        assert logged == [scale, scale]
        assert scale > 0 and np.log2(scale) == int(np.log2(scale))

    def test_steps_that_are_all_non_finite_are_written_and_counted_as_skipped(self, tmp_path):
        keras.config.set_dtype_policy("mixed_float16")
        x, y = data(n=8, scale=1.0)
        y[:] = np.nan
        model = dense_model()
        model.compile(optimizer="sgd", loss="mse")
        model.optimizer.build(model.trainable_variables)
        initial = float(to_numpy(model.optimizer.dynamic_scale))
        w0 = model.get_weights()
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path)],
        )
        assert iterations(model.optimizer) == 0  # every step skipped by the LossScaleOptimizer
        for got, want in zip(model.get_weights(), w0):
            np.testing.assert_array_equal(got, want)
        events = read_events(tmp_path)
        assert steps(events, "gradient_norm/global") == [0, 1]
        assert not any(np.isfinite(values(events, "gradient_norm/global")))
        assert values(events, "clipping/skipped_steps") == [2.0, 4.0]
        # Halved after each step: the second and fourth steps used initial/2 and initial/8.
        assert values(events, "mixed_precision/loss_scale") == [initial / 2, initial / 8]
        assert float(to_numpy(model.optimizer.dynamic_scale)) == initial / 16

    # 9. The inner optimizer by name or by config.
    @pytest.mark.parametrize("form", ["name", "config"])
    def test_clipped_optimizer_from_a_name_or_a_config_trains(self, tmp_path, form):
        x, y = data(n=16)
        lr = 0.001 if form == "name" else 0.01  # the config's learning rate is used
        reference = dense_model()
        reference.compile(
            optimizer=ClippedOptimizer(keras.optimizers.Adam(lr), clipping.ClipByGlobalNorm(1.0)),
            loss="mse",
        )
        reference.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        inner = "adam" if form == "name" else keras.optimizers.serialize(keras.optimizers.Adam(lr))
        opt = ClippedOptimizer(inner, clipping.ClipByGlobalNorm(1.0))
        # The backend's Adam (a subclass on PyTorch), as keras.optimizers.get gives.
        assert type(opt.inner_optimizer) is type(reference.optimizer.inner_optimizer)
        assert float(to_numpy(opt.learning_rate)) == pytest.approx(lr)
        model = dense_model()
        model.compile(optimizer=opt, loss="mse")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            shuffle=False,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, diagnose=False)],
        )
        assert model.optimizer is opt
        assert iterations(opt) == 4 and opt.gradient_statistics()["steps"] == 4.0
        for got, want in zip(model.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        events = read_events(tmp_path)
        assert values(events, "clipping/threshold") == pytest.approx([1.0, 1.0])
        assert steps(events, "gradient_norm/global") == [0, 1]

    # 10. How the statistics leave the step.
    def test_statistics_stay_on_the_device_during_a_boards_fit_and_totals_carry_over(
        self, tmp_path, monkeypatch
    ):
        """With GradientBoard, a JAX step sends nothing to the host (no
        `jax.debug.callback`); without it, a `ClippedOptimizer` still records
        (by callback on JAX). The totals add up across both ways, and across
        the gradient copies switched on between two fits."""
        sent = []
        if BACKEND == "jax":
            from keras_gradkit.backend.jax import recording

            store = recording.Sink._store
            monkeypatch.setattr(
                recording.Sink, "_store", lambda self, *a: (sent.append(1), store(self, *a))[1]
            )
        x, y = data(n=8)
        # histogram_freq 0, then 1 (gradient copies switched on), a fit without the board, a board again.
        plan = [0, 1, None, 1]
        history, _ = numpy_sgd(dense_model().get_weights(), x, y, 0.1, len(plan))
        for name in ("sgd", "clipped"):
            sent.clear()
            model = dense_model()
            opt = keras.optimizers.SGD(0.1)
            if name == "clipped":
                opt = ClippedOptimizer(opt, clipping.ClipByGlobalNorm(1e6))
            model.compile(optimizer=opt, loss="mse")
            for epoch, histogram_freq in enumerate(plan):  # one step per epoch
                callbacks = (
                    []
                    if histogram_freq is None
                    else [
                        gk.callbacks.GradientBoard(
                            tmp_path / f"{name}{epoch}", histogram_freq=histogram_freq
                        )
                    ]
                )
                model.fit(
                    x,
                    y,
                    batch_size=8,
                    initial_epoch=epoch,
                    epochs=epoch + 1,
                    verbose=0,
                    shuffle=False,
                    callbacks=callbacks,
                )
            stats = callbacks[0].gradient_statistics()
            # The monitor counts the steps it watched; a ClippedOptimizer counts all of its own.
            assert stats["steps"] == (4.0 if name == "clipped" else 3.0), (name, stats["steps"])
            assert stats["global_norm"] == pytest.approx(norm(history[3][1]), rel=1e-5)
            if name == "clipped":
                assert opt.gradient_statistics()["steps"] == 4.0
            for epoch in (0, 1, 3):
                events = read_events(tmp_path / f"{name}{epoch}")
                assert steps(events, "gradient_norm/global") == [epoch], (name, epoch)
                assert scalar(events, "gradient_norm/global", 0) == pytest.approx(
                    norm(history[epoch][1]), rel=1e-5
                )
                assert ("gradients/net/out/kernel" in events) == (epoch > 0), (name, epoch)
            if BACKEND == "jax":
                # Only the ClippedOptimizer's fit without the board (one step) used a callback.
                assert len(sent) == (1 if name == "clipped" else 0), (name, len(sent))
