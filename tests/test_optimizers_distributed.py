"""ClippedOptimizer and GradientBoard under `tf.distribute.MirroredStrategy`
with 2 logical CPU devices.

Logical devices must be configured before TensorFlow initializes its devices,
so the comparison runs in a fresh subprocess (one for all the cases here); it
prints a JSON summary.
`jit_compile=True` is not covered: Keras 3.15 / TF 2.21 `fit` with XLA fails
under `MirroredStrategy` on logical CPU devices even with a plain optimizer, and
so does a plain optimizer with `gradient_accumulation_steps` (a `cond` around a
`merge_call`), so neither combination is tested here.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_gradient_board import data, norm, numpy_dense_gradients, read_events, scalar

pytestmark = pytest.mark.tensorflow_only

_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import keras_gradkit as gk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = (rng.normal(size=(16, 2)) * 20).astype("float32")
    x_nan = x.copy()
    x_nan[5, 0] = np.nan


    def run(strategy, make_optimizer, jit=False, nan_batch=False):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = keras.Sequential(
                [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
            )
            optimizer = make_optimizer()
            model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        weights = model.get_weights()
        if nan_batch:
            model.fit(x_nan[:8], y[:8], batch_size=8, epochs=1, verbose=0)
            unchanged = all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
        else:
            unchanged = None
        stats = optimizer.gradient_statistics() if hasattr(optimizer, "gradient_statistics") else {}
        return weights, stats, unchanged, int(optimizer.iterations.numpy())


    def diff(a, b):
        return max(float(np.abs(p - q).max()) for p, q in zip(a, b))


    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()

    # GradientBoard in a plain fit under the strategy: what it logs is checked
    # against NumPy by test_mirrored_strategy_logs_the_aggregated_gradient.
    board_data = np.load("board_data.npz")
    with mirrored.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
             keras.layers.Dense(2, name="out")], name="net")
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    np.savez("board_w0.npz", *model.get_weights())
    board = gk.callbacks.GradientBoard("board_logs")
    model.fit(board_data["x"], board_data["y"], batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[board])
    board_run = [type(model.optimizer).__name__, mirrored.num_replicas_in_sync]

    C = gk.optimizers.ClippedOptimizer
    cases = {
        "global_norm": (lambda: C(keras.optimizers.SGD(0.1), gk.clipping.ClipByGlobalNorm(1.0)), {}),
        "keras_global_clipnorm": (lambda: keras.optimizers.SGD(0.1, global_clipnorm=1.0), {}),
        "autoclip_adam": (lambda: C(keras.optimizers.Adam(0.05), gk.clipping.AutoClip(50.0, 5)), {}),
        "skip_non_finite": (
            lambda: C(
                keras.optimizers.Adam(0.05),
                gk.clipping.chain(gk.clipping.SkipNonFinite(), gk.clipping.ClipByGlobalNorm(1.0)),
            ),
            {"nan_batch": True},
        ),
    }
    out = {}
    for name, (make, kwargs) in cases.items():
        w1, s1, u1, i1 = run(single, make, **kwargs)
        w2, s2, u2, i2 = run(mirrored, make, **kwargs)
        out[name] = {
            "max_weight_difference": diff(w1, w2),
            "global_norm": [s1.get("global_norm"), s2.get("global_norm")],
            "steps": [s1.get("steps"), s2.get("steps")],
            "skipped_steps": [s1.get("skipped_steps"), s2.get("skipped_steps")],
            "unchanged_after_nan": [u1, u2],
            "iterations": [i1, i2],
        }
    out["num_replicas"] = mirrored.num_replicas_in_sync
    out["board_run"] = board_run
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    env = dict(
        os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out_dir = tmp_path_factory.mktemp("mirrored")
    x, y = data(n=8)
    np.savez(out_dir / "board_data.npz", x=x, y=y)
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        cwd=str(out_dir),
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT ") :])
    results["out_dir"] = out_dir
    return results


class TestMirroredStrategy:
    def test_two_replicas(self, mirrored_results):
        assert mirrored_results["num_replicas"] == 2

    @pytest.mark.parametrize("case", ["global_norm", "autoclip_adam"])
    def test_same_weights_as_one_device(self, mirrored_results, case):
        r = mirrored_results[case]
        assert r["max_weight_difference"] < 1e-6, r
        single_norm, mirrored_norm = r["global_norm"]
        assert mirrored_norm == pytest.approx(single_norm, rel=1e-5)
        assert r["steps"][0] == r["steps"][1]
        assert r["iterations"][0] == r["iterations"][1]

    def test_keras_global_clipnorm_differs_under_mirrored(self, mirrored_results):
        # Keras clips each replica's local gradient before the all-reduce.
        assert mirrored_results["keras_global_clipnorm"]["max_weight_difference"] > 1e-3

    def test_skip_non_finite_under_mirrored(self, mirrored_results):
        r = mirrored_results["skip_non_finite"]
        assert r["max_weight_difference"] < 1e-6, r
        assert r["unchanged_after_nan"] == [True, True]
        assert r["skipped_steps"] == [1.0, 1.0]
        assert r["iterations"] == [4, 4]


# Moved here from test_gradient_board_integration.py so that it shares the
# fresh process above (it needs the same 2 logical devices).
def test_mirrored_strategy_logs_the_aggregated_gradient(mirrored_results):
    out_dir = mirrored_results["out_dir"]
    x, y = (np.load(out_dir / "board_data.npz")[k] for k in ("x", "y"))
    assert mirrored_results["board_run"] == ["SGD", 2]  # given back after fit
    w0 = np.load(out_dir / "board_w0.npz")
    grads = numpy_dense_gradients([w0[f"arr_{i}"] for i in range(4)], x, y)
    events = read_events(out_dir / "board_logs")
    # The full-batch gradient, not one replica's half (Keras's own clipping sees that).
    assert scalar(events, "gradient_norm/global") == pytest.approx(norm(grads), rel=1e-5)
    buckets = events["gradients/net/hidden/kernel"][1][-1][1]
    assert buckets[:, 2].sum() == 12
    np.testing.assert_allclose(
        [buckets[0, 0], buckets[-1, 1]], [grads[0].min(), grads[0].max()], rtol=1e-4
    )
