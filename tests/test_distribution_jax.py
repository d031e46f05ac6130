"""fit across devices and processes on JAX (Keras's distribution API), with
ClippedOptimizer and GradientBoard: the same weights as one device."""

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from test_gradient_board import read_events, scalar

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="Keras's JAX distribution API"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TWO_DEVICES = textwrap.dedent(
    """
    import sys
    import keras, numpy as np
    import keras_gradkit as gk

    assert len(keras.distribution.list_devices()) == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (rng.normal(size=(32, 2)) * 5).astype("float32")

    def train(log_dir, distributed):
        if distributed:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
        opt = gk.optimizers.ClippedOptimizer(keras.optimizers.SGD(0.1), gk.clipping.ClipByGlobalNorm(1.0))
        model.compile(optimizer=opt, loss="mse")
        board = gk.callbacks.GradientBoard(log_dir, update_freq="batch")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[board])
        keras.distribution.set_distribution(None)
        return model.get_weights()

    single = train(sys.argv[1] + "/single", False)
    both = train(sys.argv[1] + "/two", True)
    np.savez(sys.argv[1] + "/weights.npz", *single, *both)
    """
)


def _run(command, env, timeout):
    """Runs `command` in its own process group and kills the group whatever happens."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def test_two_devices_give_the_single_device_weights_and_global_norm(tmp_path):
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        # After the suite's own flags (tests/conftest.py), if any.
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
        PYTHONPATH=ROOT,
    )
    code, output = _run([sys.executable, "-c", _TWO_DEVICES, str(tmp_path)], env, timeout=240)
    assert code == 0, output[-3000:]
    weights = np.load(tmp_path / "weights.npz")
    arrays = [weights[f"arr_{i}"] for i in range(len(weights.files))]
    half = len(arrays) // 2
    for a, b in zip(arrays[:half], arrays[half:]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    single, two = read_events(tmp_path / "single"), read_events(tmp_path / "two")
    got = [float(v) for _, v in two["gradient_norm/global"][1]]
    want = [float(v) for _, v in single["gradient_norm/global"][1]]
    assert len(got) == 8
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_two_processes_on_loopback_give_one_process_weights(tmp_path):
    # 2 processes on 127.0.0.1 (gloo CPU collectives), then one process on the same global batches.
    command = [
        sys.executable,
        os.path.join(ROOT, "examples", "multi_worker.py"),
        "--backend",
        "jax",
        "--local-workers",
        "2",
        "--epochs",
        "1",
        "--global-batch-size",
        "128",
        "--units",
        "8",
        "--logdir",
        str(tmp_path / "logs"),
        "--out",
        str(tmp_path / "w.npz"),
        "--timeout",
        "200",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    code, output = _run(command, env, timeout=300)
    assert code == 0, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("max weight difference: "), output[-3000:]
    assert float(last.split(": ")[1]) < 1e-5
    events = read_events(tmp_path / "logs")
    assert np.isfinite(scalar(events, "gradient_norm/global"))
    assert (
        len(events["gradient_norm/global"][1]) == 1797 // 128
    )  # one per update, on the chief only
