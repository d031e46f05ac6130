"""The GradientBoard workflow end to end, on every backend: what the model
saves, TensorFlow-free writing, step alignment with Keras's TensorBoard,
preemption with BackupAndRestore, and the gradient across depth."""

import os
import signal
import textwrap

import keras
import numpy as np
import pytest
from gradient_testing import value_and_gradients
from test_gradient_board import data, dense_model, read_events, scalar, steps
from test_gradient_board_trust import finish, run_in_this_process, run_python, start_python

import keras_gradkit as gk

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocking(*names):
    """Script lines after which importing `names` fails (`None` in sys.modules:
    `import` raises ImportError and `importlib.util.find_spec` says absent)."""
    return "import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in names)


def _imported(prefix):
    return f"any(v is not None and (k == {prefix!r} or k.startswith({prefix!r} + '.')) for k, v in sys.modules.items())"


def test_saved_model_reloads_with_the_users_optimizer_without_the_package(tmp_path):
    x, y = data(n=16)
    model = dense_model()
    adam = keras.optimizers.Adam(0.01)
    model.compile(optimizer=adam, loss="mse")
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[gk.callbacks.GradientBoard(tmp_path / "logs")],
    )
    assert model.optimizer is adam
    path = tmp_path / "model.keras"
    model.save(path)
    expected = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    np.savez(tmp_path / "expected.npz", *expected)
    script = _blocking("keras_gradkit") + textwrap.dedent(
        """
        import warnings
        import keras, numpy as np
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = keras.saving.load_model(sys.argv[1])
        skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
        assert not skipped, skipped
        assert type(model.optimizer).__name__ == "Adam", type(model.optimizer)
        expected = np.load(sys.argv[2])
        got = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        assert len(got) == len(expected.files), (len(got), len(expected.files))
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, expected[f"arr_{i}"])
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 8
        assert not IMPORTED
        print("ok")
        """
    ).replace("IMPORTED", _imported("keras_gradkit"))
    result = run_python(script, path, tmp_path / "expected.npz")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the TensorFlow backend needs TensorFlow")
def test_everything_is_written_and_read_back_without_tensorflow(tmp_path):
    script = _blocking("tensorflow") + textwrap.dedent(
        """
        import keras, numpy as np
        import keras_gradkit as gk
        from tensorboard.backend.event_processing import plugin_event_accumulator as pea

        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 10, 2)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        model = keras.Sequential([keras.Input((10, 2)), gk.layers.IndRNN(4, name="ind"), keras.layers.Dense(1)])
        opt = gk.optimizers.ClippedOptimizer(keras.optimizers.Adam(0.01), gk.clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse")
        board = gk.callbacks.GradientBoard(sys.argv[1], update_freq="batch", time_probe=(x[:4], y[:4]))
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[board])
        acc = pea.EventAccumulator(sys.argv[1] + "/train", size_guidance={pea.TENSORS: 0})
        acc.Reload()
        tags = set(acc.Tags()["tensors"])
        for tag in ["gradient_norm/global", "clipping/threshold", "gradient_depth", "gradient_depth/first_to_last",
                    "time_gradient/input", "time_gradient/ind", "time_gradient/reach",
                    "gradients/sequential/ind/ind_rnn_cell/recurrent_kernel"]:
            assert tag in tags, (tag, sorted(tags))
        assert [e.step for e in acc.Tensors("gradient_norm/global")] == list(range(1, 9))
        assert not IMPORTED
        print("ok")
        """
    ).replace("IMPORTED", _imported("tensorflow"))
    result = run_python(script, tmp_path / "logs")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("update_freq", ["epoch", "batch"])
def test_steps_line_up_with_keras_tensorboard(tmp_path, update_freq):
    x, y = data(n=12)
    model = dense_model()
    model.compile(optimizer="adam", loss="mse")
    callbacks = [
        keras.callbacks.TensorBoard(tmp_path, update_freq=update_freq, histogram_freq=1),
        gk.callbacks.GradientBoard(tmp_path, update_freq=update_freq, diagnose=False),
    ]
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=callbacks)
    events = read_events(tmp_path)
    ours = steps(events, "gradient_norm/global")
    theirs = steps(events, f"{update_freq}_loss")
    assert ours == theirs == ([0, 1, 2] if update_freq == "epoch" else list(range(1, 10)))
    # Histograms at epochs, as Keras's weight histograms.
    assert (
        steps(events, "gradients/net/out/kernel")
        == steps(events, "net/out/kernel/histogram")
        == [0, 1, 2]
    )


_PREEMPTED = textwrap.dedent(
    """
    import os, signal, sys, warnings
    if __name__ == "__main__":
        warnings.simplefilter("always")
    import keras, numpy as np
    import keras_gradkit as gk


    def train(log_dir, backup_dir, out, kill_at):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 3)).astype("float32")
        y = (rng.normal(size=(32, 2)) * 5).astype("float32")
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
        opt = gk.optimizers.ClippedOptimizer(keras.optimizers.Adam(0.05), gk.clipping.AutoClip(25.0, 8))
        model.compile(optimizer=opt, loss="mse")

        class Kill(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == kill_at:
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks = [keras.callbacks.BackupAndRestore(backup_dir)]
        if log_dir != "-":
            callbacks.append(gk.callbacks.GradientBoard(log_dir, update_freq="batch", histogram_freq=1))
        callbacks.append(Kill())
        model.fit(x, y, batch_size=8, epochs=6, shuffle=False, verbose=0, callbacks=callbacks)
        assert model.optimizer is opt, type(model.optimizer)
        np.savez(out, *model.get_weights(), *[keras.ops.convert_to_numpy(v) for v in opt.variables])
        stats = opt.gradient_statistics()
        np.save(out + ".stats.npy", np.array([stats[k] for k in sorted(stats)]))
        iterations = int(keras.ops.convert_to_numpy(opt.iterations))
        print("iterations", iterations)
        return iterations


    if __name__ == "__main__":
        train(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    """
)


def test_preemption_ends_as_an_uninterrupted_run_and_writes_at_the_true_steps(tmp_path):
    # 4 steps per epoch, 24 in all, a backup at every epoch's end. Killed
    # (SIGKILL) at step 15 in a fresh process, the backup holds step 12: the
    # resumed run, in another fresh process, rewrites 13-15 and goes on.
    # The uninterrupted runs, with and without GradientBoard, here meanwhile:
    # the resumed run ends with their weights, optimizer variables and
    # gradient statistics, and writes what the uninterrupted board wrote, at
    # the same steps.
    killing = start_python(_PREEMPTED, tmp_path / "logs", tmp_path / "b1", tmp_path / "r.npz", 15)
    try:
        for name in ("plain", "bare"):
            log_dir = str(tmp_path / name) if name == "plain" else "-"
            run_in_this_process(
                _PREEMPTED,
                "train",
                log_dir,
                str(tmp_path / f"b_{name}"),
                str(tmp_path / f"{name}.npz"),
                -1,
            )
    finally:
        killed = finish(killing)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "r.npz").exists()
    resumed = run_python(_PREEMPTED, tmp_path / "logs", tmp_path / "b1", tmp_path / "r.npz", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Every variable of the backup found its place (Keras warns otherwise).
    assert "Skipping variable loading" not in resumed.stdout + resumed.stderr, resumed.stderr[
        -3000:
    ]
    assert "iterations 24" in resumed.stdout, resumed.stdout
    got = np.load(tmp_path / "r.npz")
    for name in ("plain", "bare"):
        want = np.load(tmp_path / f"{name}.npz")
        assert len(want.files) == len(got.files)
        for key in want.files:  # the weights, then the optimizer's variables
            np.testing.assert_allclose(
                got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}"
            )
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}.npz.stats.npy"),
            np.load(tmp_path / "r.npz.stats.npy"),
            rtol=1e-5,
        )
    uninterrupted, preempted = read_events(tmp_path / "plain"), read_events(tmp_path / "logs")
    assert set(uninterrupted) == set(preempted)
    for tag in ("gradient_norm/global", "clipping/threshold", "clipping/clipped_fraction"):
        assert steps(preempted, tag) == steps(uninterrupted, tag) == list(range(1, 25)), tag
        want = [float(v) for _, v in uninterrupted[tag][1]]
        got_values = [float(v) for _, v in preempted[tag][1]]
        np.testing.assert_allclose(got_values, want, rtol=1e-5, err_msg=tag)
    # Histograms at epochs: 0-2 before the kill, 3-5 after the resume.
    histograms = [tag for tag in preempted if tag.startswith("gradients/")]
    assert histograms
    for tag in histograms:
        assert steps(preempted, tag) == steps(uninterrupted, tag) == list(range(6)), tag


# ------------------------------------------------------------------ depth
class _Block(keras.layers.Layer):
    """A nested block: two Dense layers, counted as one layer."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.layers.Dense(units, activation="tanh")
        self.b = keras.layers.Dense(units)

    def call(self, x):
        return x + self.b(self.a(x))


def _depth_models():
    keras.utils.set_random_seed(5)
    mlp = keras.Sequential(
        [
            keras.Input((3,)),
            *[keras.layers.Dense(5, activation="sigmoid") for _ in range(5)],
            keras.layers.Dense(2),
        ]
    )
    inputs = keras.Input((6, 3))
    h = keras.layers.Conv1D(4, 3, padding="same")(inputs)
    h = keras.layers.SimpleRNN(4, return_sequences=True)(h)
    h = _Block(4)(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.GRU(4)(h)
    stack = keras.Model(inputs, keras.layers.Dense(2)(h))
    return {"mlp": (mlp, (16, 3)), "rnn_stack_with_block": (stack, (16, 6, 3))}


@pytest.mark.parametrize("name", ["mlp", "rnn_stack_with_block"])
def test_gradient_depth_equals_the_backends_own_gradient(tmp_path, name):
    model, shape = _depth_models()[name]
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float32")
    y = rng.normal(size=(shape[0], 2)).astype("float32")
    layers = [layer for layer in model.layers if layer.trainable_variables]
    loss = lambda: keras.losses.MeanSquaredError()(y, model(x, training=True))
    _, _, grads = value_and_gradients(
        loss, variables=[v for layer in layers for v in layer.trainable_variables]
    )
    norms, i = [], 0
    for layer in layers:
        k = len(layer.trainable_variables)
        norms.append(np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in grads[i : i + k])))
        i += k
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse"
    )  # the applied gradient is the batch gradient
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[gk.callbacks.GradientBoard(tmp_path, diagnose=False)],
    )
    events = read_events(tmp_path)
    np.testing.assert_allclose(events["gradient_depth/norms"][1][-1][1], norms, rtol=1e-4)
    assert scalar(events, "gradient_depth/first_to_last") == pytest.approx(
        norms[0] / norms[-1], rel=1e-4
    )
    assert events["gradient_depth"][0] == "images"
    if name == "rnn_stack_with_block":
        assert len(norms) == 6  # the block is one layer
