"""GradientBoard read back by the real TensorBoard server over HTTP. (Under
`MirroredStrategy`: test_optimizers_distributed.py, whose fresh process with
2 logical CPU devices it shares.)"""

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

import keras_gradkit as gk

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
