"""GradientBoard under `MirroredStrategy` (2 logical CPU devices, in a fresh
process) and read back by the real TensorBoard server over HTTP."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import keras
import numpy as np
import pytest
from test_gradient_board import data, norm, numpy_dense_gradients, read_events, scalar

import keras_gradkit as gk

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_gradkit as gk

    out_dir = sys.argv[1]
    data = np.load(os.path.join(out_dir, "data.npz"))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
             keras.layers.Dense(2, name="out")], name="net")
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    np.savez(os.path.join(out_dir, "w0.npz"), *model.get_weights())
    board = gk.callbacks.GradientBoard(os.path.join(out_dir, "logs"))
    model.fit(data["x"], data["y"], batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[board])
    print(type(model.optimizer).__name__, strategy.num_replicas_in_sync)
    """
)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_logs_the_aggregated_gradient(tmp_path):
    x, y = data(n=8)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split()[-2:] == ["SGD", "2"]  # given back after fit
    w0 = np.load(tmp_path / "w0.npz")
    grads = numpy_dense_gradients([w0[f"arr_{i}"] for i in range(4)], x, y)
    events = read_events(tmp_path / "logs")
    # The full-batch gradient, not one replica's half (Keras's own clipping sees that).
    assert scalar(events, "gradient_norm/global") == pytest.approx(norm(grads), rel=1e-5)
    buckets = events["gradients/net/hidden/kernel"][1][-1][1]
    assert buckets[:, 2].sum() == 12
    np.testing.assert_allclose(
        [buckets[0, 0], buckets[-1, 1]], [grads[0].min(), grads[0].max()], rtol=1e-4
    )


# The real TensorBoard server, started with TensorFlow blocked from import so
# that it comes up in seconds (it then reads event files with its own reader).
_TENSORBOARD_WITHOUT_TF = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("not needed by the TensorBoard server")
            return None

    sys.meta_path.insert(0, _Block())
    from tensorboard import main

    sys.argv = ["tensorboard"] + sys.argv[1:]
    main.run_main()
    """
)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def test_tensorboard_server_shows_the_tags(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 2)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((5, 2)), keras.layers.SimpleRNN(3, name="rnn"), keras.layers.Dense(1)],
        name="net",
    )
    model.compile(optimizer="adam", loss="mse")
    log_dir = tmp_path / "logs"
    model.fit(x, y, verbose=0, callbacks=[gk.callbacks.GradientBoard(log_dir, time_probe=(x, y))])
    port = _free_port()
    command = [
        sys.executable,
        "-c",
        _TENSORBOARD_WITHOUT_TF,
        "--logdir",
        str(log_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--reload_interval",
        "1",
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        scalars = {}
        while time.monotonic() < deadline:
            try:
                scalars = _get_json(f"{base}/data/plugin/scalars/tags")
                if "gradient_norm/global" in scalars.get("train", {}):
                    break
            except OSError:
                pass
            assert server.poll() is None, "tensorboard exited"
            time.sleep(0.5)
        assert "gradient_norm/global" in scalars.get("train", {}), scalars
        assert {
            "gradient_norm/net/rnn/simple_rnn_cell/kernel",
            "clipping/clipped_fraction",
            "time_gradient/reach",
            "time_gradient/rnn/reach",
            "update_ratio/net/dense/kernel",
        } <= set(scalars["train"])
        histograms = _get_json(f"{base}/data/plugin/histograms/tags")
        assert "gradients/net/rnn/simple_rnn_cell/recurrent_kernel" in histograms["train"]
        images = _get_json(f"{base}/data/plugin/images/tags")
        assert {"time_gradient/input", "time_gradient/rnn", "gradient_depth"} <= set(
            images["train"]
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
