"""GradientBoard's diagnosis: the Keras logs it adds (checked against a replay
of the training with the backend's own autodiff and with NumPy), the report
on TensorBoard's Text dashboard (read back with TensorBoard's reader), the
warnings, `stop_on` and `raise_on` (with `BackupAndRestore`), the
constructor, and the training-time kinds. Runs on every backend."""

import csv
import json
import re
import warnings
from typing import NamedTuple

import keras
import numpy as np
import pytest
from test_gradient_board import (
    data,
    dense_model,
    norm,
    numpy_dense_gradients,
    numpy_reach,
    numpy_rnn_time_gradients,
    read_events,
)

import keras_gradkit as gk
from keras_gradkit import clipping
from keras_gradkit.diagnostics import KINDS, GradientError, GradientWarning, Thresholds
from keras_gradkit.optimizers import ClippedOptimizer

BACKEND = keras.backend.backend()
# Tests that count warnings record them themselves.
pytestmark = pytest.mark.filterwarnings("ignore::keras_gradkit.diagnostics.GradientWarning")
# A threshold every SGD step passes: `large_updates` at every check.
ALWAYS_LARGE = Thresholds(update_ratio=1e-9)


# ----------------------------------------------------------------- helpers
def _forward(tanh, weights, x):
    w1, b1, w2, b2 = weights
    return tanh(x @ w1 + b1) @ w2 + b2


def backend_gradients(weights, x, y):
    """The gradient of the Keras MSE of tanh(x W1 + b1) W2 + b2, in float32,
    by the backend's own autodiff (not keras_gradkit's helpers)."""
    weights = [np.asarray(w, "float32") for w in weights]
    x, y = np.asarray(x, "float32"), np.asarray(y, "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        ws = [tf.constant(w) for w in weights]
        with tf.GradientTape() as tape:
            tape.watch(ws)
            loss = tf.reduce_mean(tf.square(_forward(tf.tanh, ws, tf.constant(x)) - y))
        return [np.asarray(g, "float64") for g in tape.gradient(loss, ws)]
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        loss = lambda ws: jnp.mean(jnp.square(_forward(jnp.tanh, ws, x) - y))
        return [np.asarray(g, "float64") for g in jax.grad(loss)([jnp.asarray(w) for w in weights])]
    if BACKEND == "torch":
        import torch

        ws = [torch.tensor(w, requires_grad=True) for w in weights]
        loss = torch.mean(torch.square(_forward(torch.tanh, ws, torch.tensor(x)) - torch.tensor(y)))
        loss.backward()
        return [w.grad.numpy().astype("float64") for w in ws]
    raise NotImplementedError(BACKEND)


class Step(NamedTuple):
    weights: list  # before the step
    norm: float  # global norm of the raw gradient
    clipped_norm: float  # global norm of the applied gradient (NaN for a skipped step)
    skipped: bool


def replay_sgd(weights, x, y, lr, epochs, batch_size, gradients, clip=None, skip=False):
    """Mini-batch SGD on the dense model as `fit(shuffle=False)` runs it,
    optionally clipped by global norm or skipping non-finite steps: a list,
    per epoch, of the steps' `Step`s."""
    weights = [np.asarray(w, "float64") for w in weights]
    epochs_steps = []
    for _ in range(epochs):
        steps = []
        for start in range(0, len(x), batch_size):
            grads = gradients(weights, x[start : start + batch_size], y[start : start + batch_size])
            n = norm(grads)
            if skip and not np.isfinite(n):
                steps.append(Step(weights, n, np.nan, True))
                continue
            scale = 1.0 if clip is None else clip / max(n, clip)
            applied = [g * scale for g in grads]
            steps.append(Step(weights, n, norm(applied), False))
            weights = [w - lr * g for w, g in zip(weights, applied)]
        epochs_steps.append(steps)
    return epochs_steps


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def early_stopping_epochs(values, patience):
    """How many epochs `EarlyStopping(mode="min", min_delta=0, patience)` lets run on `values`."""
    best, wait = None, 0
    for epoch, value in enumerate(values):
        wait += 1
        if best is None or value < best:
            best, wait = value, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch + 1
    return len(values)


def diagnosis_texts(log_dir):
    """`[(step, markdown)]` of the `diagnosis` tag, which must be on the Text dashboard."""
    events = read_events(log_dir)
    plugin, entries = events["diagnosis"]
    assert plugin == "text"
    texts = []
    for step, value in entries:
        text = np.asarray(value).reshape(-1)[0]
        texts.append((step, text.decode() if isinstance(text, bytes) else str(text)))
    return texts


def table_findings(markdown):
    """The `(kind, where)` of each finding of a report's Markdown."""
    rows = re.findall(r"^\*\*\d+\. `(\w+)` at `([^`]+)`\*\*", markdown, flags=re.MULTILINE)
    return [(kind, where) for kind, where in rows if kind in KINDS]


def gradient_warnings(caught):
    """`(kind, where)` of each GradientWarning in a `catch_warnings(record=True)` list."""
    found = []
    for w in caught:
        if issubclass(w.category, GradientWarning):
            match = re.match(r"GradientBoard: (\w+) at (\S+) \(", str(w.message))
            assert match, str(w.message)
            found.append(match.groups())
    return found


class BatchLogs(keras.callbacks.Callback):
    """Placed after GradientBoard: the logs each batch end sees."""

    def __init__(self, keys):
        super().__init__()
        self.keys = keys
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append({k: float(logs[k]) for k in self.keys if k in logs})


class EpochWeights(keras.callbacks.Callback):
    """The weights at each epoch's begin (after BackupAndRestore has restored them)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_begin(self, epoch, logs=None):
        self.weights.append((epoch, [w.copy() for w in self.model.get_weights()]))


def compiled_dense(optimizer, seed=3):
    model = dense_model(seed=seed)
    model.compile(optimizer=optimizer, loss="mse")
    return model


# ------------------------------------------------------------------- tests
class TestGradientBoardDiagnosis:
    # 1. Keras logs.
    def test_epoch_logs_feed_csv_logger_history_and_early_stopping(self, tmp_path):
        x, y = data(n=16)
        lr, batch_size, epochs, patience = 0.3, 4, 5, 1
        model = compiled_dense(keras.optimizers.SGD(lr))
        w0 = model.get_weights()
        csv_path = tmp_path / "log.csv"
        stopper = keras.callbacks.EarlyStopping(
            monitor="gradient_norm", mode="min", patience=patience
        )
        history = model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[
                gk.callbacks.GradientBoard(tmp_path / "logs"),
                keras.callbacks.CSVLogger(str(csv_path)),
                stopper,
            ],
        )
        replay = replay_sgd(w0, x, y, lr, epochs, batch_size, backend_gradients)
        expected = [np.mean([s.norm for s in steps]) for steps in replay]
        # The backend's autodiff and the NumPy backprop tell the same story.
        by_numpy = replay_sgd(w0, x, y, lr, epochs, batch_size, numpy_dense_gradients)
        np.testing.assert_allclose(
            expected, [np.mean([s.norm for s in steps]) for steps in by_numpy], rtol=1e-4
        )
        rows = read_csv(csv_path)
        logged = [float(r["gradient_norm"]) for r in rows]
        ran = len(history.history["loss"])
        assert [int(r["epoch"]) for r in rows] == list(range(ran))
        np.testing.assert_allclose(logged, expected[:ran], rtol=1e-4)
        np.testing.assert_allclose(history.history["gradient_norm"], logged, rtol=1e-6)
        assert set(history.history) == {"loss", "gradient_norm", "depth_first_to_last"}
        # The gradient norm rises after epoch 1: EarlyStopping stops on it, as the CSV says.
        assert ran < epochs
        assert stopper.stopped_epoch == ran - 1
        assert early_stopping_epochs(logged, patience) == ran
        assert early_stopping_epochs(expected, patience) == ran
        # depth_first_to_last: the event file's, that of the epoch's last step.
        events = read_events(tmp_path / "logs")
        depth = [float(v) for _, v in events["gradient_depth/first_to_last"][1]]
        np.testing.assert_allclose([float(r["depth_first_to_last"]) for r in rows], depth)
        last = [
            numpy_dense_gradients(steps[-1].weights, x[-batch_size:], y[-batch_size:])
            for steps in by_numpy[:ran]
        ]
        np.testing.assert_allclose(depth, [norm(g[:2]) / norm(g[2:]) for g in last], rtol=1e-4)

    def test_clipped_optimizer_epoch_logs(self, tmp_path):
        x, y = data(n=16)
        lr, batch_size, epochs, clip = 0.1, 4, 3, 3.5
        model = compiled_dense(
            ClippedOptimizer(keras.optimizers.SGD(lr), clipping.ClipByGlobalNorm(clip))
        )
        w0 = model.get_weights()
        history = model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path)],
        )
        replay = replay_sgd(w0, x, y, lr, epochs, batch_size, backend_gradients, clip=clip)
        norms = np.array([[s.norm for s in steps] for steps in replay])
        # Some steps are clipped and some not, none close to the threshold.
        assert 0 < np.sum(norms > clip) < norms.size
        assert np.min(np.abs(norms - clip)) > 0.01
        logs = history.history
        assert set(logs) == {
            "loss",
            "gradient_norm",
            "gradient_norm_clipped",
            "clipped_fraction",
            "skipped_steps",
            "depth_first_to_last",
        }
        np.testing.assert_allclose(logs["gradient_norm"], norms.mean(1), rtol=1e-4)
        np.testing.assert_allclose(
            logs["gradient_norm_clipped"], np.minimum(norms, clip).mean(1), rtol=1e-4
        )
        np.testing.assert_allclose(
            logs["gradient_norm_clipped"],
            [np.mean([s.clipped_norm for s in steps]) for steps in replay],
            rtol=1e-4,
        )
        assert logs["clipped_fraction"] == pytest.approx(list((norms > clip).mean(1)))
        assert logs["skipped_steps"] == [0.0] * epochs
        events = read_events(tmp_path)
        np.testing.assert_allclose(
            logs["depth_first_to_last"],
            [float(v) for _, v in events["gradient_depth/first_to_last"][1]],
        )

    def test_batch_logs_are_the_written_steps(self, tmp_path):
        x, y = data(n=12)
        lr, batch_size, epochs, clip = 0.1, 4, 2, 3.5
        model = compiled_dense(
            ClippedOptimizer(keras.optimizers.SGD(lr), clipping.ClipByGlobalNorm(clip))
        )
        w0 = model.get_weights()
        keys = ("gradient_norm", "gradient_norm_clipped", "clipped_fraction", "skipped_steps")
        recorder = BatchLogs(keys)
        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, update_freq="batch"), recorder],
        )
        steps = [
            s
            for e in replay_sgd(w0, x, y, lr, epochs, batch_size, backend_gradients, clip=clip)
            for s in e
        ]
        norms = np.array([s.norm for s in steps])
        assert 0 < np.sum(norms > clip) < norms.size
        assert len(recorder.batches) == len(steps)
        assert all(set(b) == set(keys) for b in recorder.batches), recorder.batches
        np.testing.assert_allclose([b["gradient_norm"] for b in recorder.batches], norms, rtol=1e-4)
        np.testing.assert_allclose(
            [b["gradient_norm_clipped"] for b in recorder.batches],
            np.minimum(norms, clip),
            rtol=1e-4,
        )
        # One update per write: its clipped fraction is 1 or 0.
        assert [b["clipped_fraction"] for b in recorder.batches] == list((norms > clip) * 1.0)
        assert [b["skipped_steps"] for b in recorder.batches] == [0.0] * len(steps)
        events = read_events(tmp_path)
        np.testing.assert_allclose(
            [float(v) for _, v in events["gradient_norm/global"][1]], norms, rtol=1e-4
        )

    def test_batch_logs_of_a_plain_optimizer(self, tmp_path):
        x, y = data(n=8)
        lr, batch_size = 0.1, 4
        model = compiled_dense(keras.optimizers.SGD(lr))
        w0 = model.get_weights()
        recorder = BatchLogs(("gradient_norm", "gradient_norm_clipped", "skipped_steps"))
        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, update_freq="batch"), recorder],
        )
        steps = [s for e in replay_sgd(w0, x, y, lr, 2, batch_size, backend_gradients) for s in e]
        # Not clipped, not skippable: the norm only.
        assert all(set(b) == {"gradient_norm"} for b in recorder.batches), recorder.batches
        np.testing.assert_allclose(
            [b["gradient_norm"] for b in recorder.batches], [s.norm for s in steps], rtol=1e-4
        )

    def test_time_reach_in_the_logs(self, tmp_path):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(3, 6, 2)).astype("float32")
        y = rng.normal(size=(3, 2)).astype("float32")
        inputs = keras.Input((6, 2))
        s = keras.layers.Dense(3, name="proj")(inputs)
        h = keras.layers.SimpleRNN(4, name="rnn")(s)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay as they are
        history = model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[gk.callbacks.GradientBoard(tmp_path, time_probe=(x, y))],
        )
        expected_input, _ = numpy_rnn_time_gradients(
            model.get_layer("proj").get_weights(),
            model.get_layer("rnn").get_weights(),
            model.get_layer("head").get_weights(),
            x,
            y,
        )
        reach = numpy_reach(expected_input)
        assert 0 < reach <= 6
        assert history.history["time_reach"] == [float(reach)] * 2
        events = read_events(tmp_path)
        assert [float(v) for _, v in events["time_gradient/reach"][1]] == [float(reach)] * 2

    # 2. The Text dashboard.
    def test_diagnosis_is_on_the_text_dashboard(self, tmp_path):
        x, y = data(n=16)
        model = compiled_dense(keras.optimizers.Adam(learning_rate=10.0))
        board = gk.callbacks.GradientBoard(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[board])
        texts = diagnosis_texts(tmp_path)
        assert [step for step, _ in texts] == [0, 1]
        assert "large_updates" in texts[0][1]
        where = next(f.where for f in board.findings if f.kind == "large_updates")
        assert ("large_updates", where) in table_findings(texts[0][1])
        assert texts[-1][1] == board.report.to_markdown()
        assert "large_updates" in board.report.kinds()

    # 3. Warnings.
    def test_each_new_finding_is_warned_once(self, tmp_path):
        x, y = data(n=8)
        model = compiled_dense(keras.optimizers.SGD(0.1))
        board = gk.callbacks.GradientBoard(tmp_path, thresholds=ALWAYS_LARGE)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[board])
        warned = gradient_warnings(caught)
        reports = [table_findings(text) for _, text in diagnosis_texts(tmp_path)]
        assert len(reports) == 3 and all(reports), reports  # found at every check
        seen = list(dict.fromkeys(f for report in reports for f in report))
        assert warned == seen  # once each, in the order found
        assert [(f.kind, f.where) for f in board.findings] == seen
        assert issubclass(GradientWarning, UserWarning)
        # A second fit with the same board warns only what it had not seen.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[board])
        reports = [table_findings(text) for _, text in diagnosis_texts(tmp_path)]
        new = [f for f in dict.fromkeys(f for r in reports for f in r) if f not in seen]
        assert gradient_warnings(caught) == new

    # 4. stop_on and raise_on.
    def test_stop_on_stops_after_the_write_and_backup_is_deleted(self, tmp_path):
        x, y = data(n=8)
        backup = tmp_path / "backup"
        model = compiled_dense(keras.optimizers.SGD(0.1))
        # The checks run on epochs 1 and 3: the first write with the finding ends epoch 1.
        board = gk.callbacks.GradientBoard(
            tmp_path / "logs", histogram_freq=2, thresholds=ALWAYS_LARGE, stop_on=("large_updates",)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            history = model.fit(
                x,
                y,
                batch_size=8,
                epochs=4,
                verbose=0,
                callbacks=[board, keras.callbacks.BackupAndRestore(str(backup))],
            )
        assert len(history.history["loss"]) == 2
        assert model.stop_training
        assert [step for step, _ in diagnosis_texts(tmp_path / "logs")] == [1]
        assert "large_updates" in board.report.kinds()
        # fit ran on_train_end: BackupAndRestore deleted its backup.
        assert not backup.exists()

    def test_stop_on_stops_after_the_first_epoch_with_adam_10(self, tmp_path):
        x, y = data(n=16)
        model = compiled_dense(keras.optimizers.Adam(10.0))
        board = gk.callbacks.GradientBoard(tmp_path, stop_on="large_updates")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            history = model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[board])
        assert len(history.history["loss"]) == 1
        assert "large_updates" in board.report.kinds()

    def test_raise_on_keeps_the_backup_and_a_new_fit_records_again(self, tmp_path):
        x, y = data(n=8)
        backup = tmp_path / "backup"
        lr = 0.1
        model = compiled_dense(keras.optimizers.SGD(lr))
        board = gk.callbacks.GradientBoard(
            tmp_path / "logs", histogram_freq=2, thresholds=ALWAYS_LARGE, raise_on=["large_updates"]
        )
        epochs_seen = EpochWeights()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            with pytest.raises(GradientError, match="large_updates") as info:
                model.fit(
                    x,
                    y,
                    batch_size=8,
                    epochs=4,
                    verbose=0,
                    callbacks=[board, keras.callbacks.BackupAndRestore(str(backup)), epochs_seen],
                )
        assert isinstance(info.value, RuntimeError)
        assert [f.kind for f in info.value.findings] == ["large_updates"]
        assert [e for e, _ in epochs_seen.weights] == [0, 1]  # raised at the end of epoch 1
        # No on_train_end: the backup of epoch 0 is still there.
        assert backup.is_dir()
        with open(backup / "training_metadata.json") as f:
            assert json.load(f)["epoch"] == 1
        assert [step for step, _ in diagnosis_texts(tmp_path / "logs")] == [1]

        # A new fit with a fresh GradientBoard resumes from the backup and records.
        fresh = gk.callbacks.GradientBoard(tmp_path / "logs2")
        resumed = EpochWeights()
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[fresh, keras.callbacks.BackupAndRestore(str(backup)), resumed],
        )
        assert [e for e, _ in resumed.weights] == [1, 2, 3]
        # Full batch: each epoch is one step, from the weights at its begin.
        expected = [norm(backend_gradients(w, x, y)) for _, w in resumed.weights]
        np.testing.assert_allclose(history.history["gradient_norm"], expected, rtol=1e-4)
        events = read_events(tmp_path / "logs2")
        assert [s for s, _ in events["gradient_norm/global"][1]] == [1, 2, 3]
        np.testing.assert_allclose(
            [float(v) for _, v in events["gradient_norm/global"][1]], expected, rtol=1e-4
        )
        assert fresh.report is not None
        assert not backup.exists()  # this fit ended normally

    # 5. The constructor.
    @pytest.mark.parametrize(
        "kwargs,argument,error",
        [
            ({"stop_on": ["large_update"]}, "stop_on", ValueError),
            ({"raise_on": "exploding"}, "raise_on", ValueError),
            ({"raise_on": ("skipped_steps", "nan")}, "raise_on", ValueError),
            ({"stop_on": 3}, "stop_on", TypeError),
            ({"raise_on": {"large_updates": True}}, "raise_on", TypeError),
            ({"thresholds": 0.1}, "thresholds", TypeError),
            ({"thresholds": "strict"}, "thresholds", TypeError),
            ({"thresholds": {"update_ratio": -1.0}}, "update_ratio", ValueError),
            ({"diagnose": 1}, "diagnose", TypeError),
            ({"diagnose": False, "stop_on": "large_updates"}, "diagnose", ValueError),
            ({"diagnose": False, "raise_on": ["skipped_steps"]}, "raise_on", ValueError),
            ({"histogram_freq": 0, "stop_on": "large_updates"}, "histogram_freq", ValueError),
        ],
    )
    @pytest.mark.backend_free
    def test_invalid_diagnosis_arguments(self, kwargs, argument, error):
        with pytest.raises(error, match=argument) as info:
            gk.callbacks.GradientBoard("runs/x", **kwargs)
        assert type(info.value) is error

    @pytest.mark.backend_free
    def test_diagnosis_config_round_trip(self):
        board = gk.callbacks.GradientBoard(
            "runs/x",
            thresholds=Thresholds(update_ratio=0.5, skipped_fraction=0.1),
            stop_on="large_updates",
            raise_on=["skipped_steps", "non_finite_gradient"],
        )
        config = board.get_config()
        assert json.loads(json.dumps(config)) == config
        rebuilt = gk.callbacks.GradientBoard(**config)
        assert rebuilt.get_config() == config
        assert (
            rebuilt.thresholds
            == board.thresholds
            == Thresholds(update_ratio=0.5, skipped_fraction=0.1)
        )
        assert rebuilt.stop_on == ("large_updates",)
        assert rebuilt.raise_on == ("skipped_steps", "non_finite_gradient")
        off = gk.callbacks.GradientBoard("runs/x", diagnose=False).get_config()
        assert off["diagnose"] is False
        assert gk.callbacks.GradientBoard(**json.loads(json.dumps(off))).get_config() == off

    def test_diagnose_false_writes_and_warns_nothing(self, tmp_path):
        x, y = data(n=16)
        model = compiled_dense(keras.optimizers.Adam(10.0))
        board = gk.callbacks.GradientBoard(tmp_path, diagnose=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[board])
        assert gradient_warnings(caught) == []
        events = read_events(tmp_path)
        assert "diagnosis" not in events
        assert "gradient_norm/global" in events  # the rest is written
        assert board.report is None
        assert board.findings == []

    # 6. The training-time kinds.
    def test_frequent_clipping_is_found_at_the_optimizer(self, tmp_path):
        x, y = data(n=8)
        model = compiled_dense(
            ClippedOptimizer(keras.optimizers.SGD(0.1), clipping.ClipByGlobalNorm(1e-6))
        )
        board = gk.callbacks.GradientBoard(tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[board])
        assert [(f.kind, f.where) for f in board.findings] == [("frequent_clipping", "optimizer")]
        finding = board.findings[0]
        assert finding.value == 1.0
        assert finding.threshold == Thresholds().clipped_fraction
        assert board.report.measures["clipped_fraction"] == 1.0
        assert history.history["clipped_fraction"] == [1.0, 1.0]
        assert gradient_warnings(caught) == [("frequent_clipping", "optimizer")]
        for _, text in diagnosis_texts(tmp_path):
            assert table_findings(text) == [("frequent_clipping", "optimizer")]

    def test_skipped_steps_are_counted_and_found(self, tmp_path):
        x, y = data(n=16)
        batch_size, epochs, lr = 4, 2, 0.05
        nan_batches = [0, 2]  # the last batch of each epoch is finite
        for b in nan_batches:
            y[b * batch_size + 1, 0] = np.nan
        model = compiled_dense(ClippedOptimizer(keras.optimizers.SGD(lr), clipping.SkipNonFinite()))
        w0 = model.get_weights()
        # Large updates are not the subject here.
        board = gk.callbacks.GradientBoard(tmp_path, thresholds={"update_ratio": 1e3})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(
                x,
                y,
                batch_size=batch_size,
                epochs=epochs,
                shuffle=False,
                verbose=0,
                callbacks=[board],
            )
        replay = replay_sgd(w0, x, y, lr, epochs, batch_size, backend_gradients, skip=True)
        skipped = [sum(s.skipped for s in steps) for steps in replay]
        assert skipped == [len(nan_batches)] * epochs
        per_epoch = len(x) // batch_size
        fraction = len(nan_batches) / per_epoch
        assert history.history["skipped_steps"] == list(np.cumsum(skipped) * 1.0)
        # The epoch mean is over the applied steps.
        np.testing.assert_allclose(
            history.history["gradient_norm"],
            [np.mean([s.norm for s in steps if not s.skipped]) for steps in replay],
            rtol=1e-4,
        )
        assert [(f.kind, f.where) for f in board.findings] == [("skipped_steps", "optimizer")]
        assert board.findings[0].value == pytest.approx(fraction)
        assert board.findings[0].threshold == Thresholds().skipped_fraction
        assert board.report.measures["skipped_fraction"] == pytest.approx(fraction)
        assert gradient_warnings(caught) == [("skipped_steps", "optimizer")]

    def test_a_non_finite_applied_step_makes_the_epoch_mean_nan(self, tmp_path):
        x, y = data(n=8)
        y[5, 1] = np.nan  # the second batch: a plain optimizer applies it
        model = compiled_dense(keras.optimizers.SGD(0.1))
        # The first step moves the weights by about 10% of their norm (0.092
        # on TensorFlow, 0.108 on JAX): large_updates is not what this is about.
        board = gk.callbacks.GradientBoard(
            tmp_path, thresholds=gk.diagnostics.Thresholds(update_ratio=1.0)
        )
        history = model.fit(
            x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[board]
        )
        assert np.isnan(history.history["gradient_norm"][0])
        assert "skipped_steps" not in history.history  # nothing can skip
        assert [(f.kind, f.where) for f in board.findings] == [("non_finite_gradient", "hidden")]

    def test_update_ratios_are_those_of_the_real_steps(self, tmp_path):
        # large_updates' measures against a replay: the latest step's largest
        # per-layer |w_new - w_old| / |w_new|, and the root mean square of the
        # all-variable ratio over the steps since the previous check.
        x, y = data(n=16)
        lr, batch_size, epochs = 0.3, 4, 2
        model = compiled_dense(keras.optimizers.SGD(lr))
        w0 = model.get_weights()
        board = gk.callbacks.GradientBoard(tmp_path, thresholds=Thresholds(update_ratio=0.05))
        seen = []

        class Measures(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append((dict(board.report.measures), list(board.report.findings)))

        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[board, Measures()],
        )
        replay = replay_sgd(w0, x, y, lr, epochs + 1, batch_size, backend_gradients)
        flat = [s for steps in replay for s in steps]  # weights before each step, and after
        for epoch, (measures, findings) in enumerate(seen):
            ratios, largest = [], None
            for i in range(epoch * 4, epoch * 4 + 4):
                before, after = flat[i].weights, flat[i + 1].weights
                ratios.append(norm([a - b for a, b in zip(after, before)]) / norm(after))
                per_layer = [
                    norm([a - b for a, b in zip(after[j : j + 2], before[j : j + 2])])
                    / norm(after[j : j + 2])
                    for j in (0, 2)
                ]
                largest = max(per_layer)
            rms = float(np.sqrt(np.mean(np.square(ratios))))
            np.testing.assert_allclose(measures["rms_update_ratio"], rms, rtol=1e-3)
            np.testing.assert_allclose(measures["update_ratio"], largest, rtol=1e-3)
            expected = max(rms, largest) > 0.05
            found = [f for f in findings if f.kind == "large_updates"]
            assert bool(found) == expected, (rms, largest)
            if found:
                assert found[0].value == pytest.approx(max(rms, largest), rel=1e-3)

    def test_a_healthy_run_has_no_finding(self, tmp_path):
        x, y = data(n=16)
        model = compiled_dense(keras.optimizers.Adam(1e-3))
        board = gk.callbacks.GradientBoard(tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[board])
        assert board.findings == []
        assert board.report.ok
        assert gradient_warnings(caught) == []
        texts = diagnosis_texts(tmp_path)
        assert [step for step, _ in texts] == [0, 1, 2]
        assert all(text.startswith("**No finding.**") for _, text in texts)
