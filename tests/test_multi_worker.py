"""Custom-loop training under `tf.distribute.MultiWorkerMirroredStrategy`.

Two worker processes on 127.0.0.1 (free ports, `TF_CONFIG`) train a small
IndRNN + CosineDense model with `ClippedOptimizer(SGD, ClipByGlobalNorm)`
using the loop of `examples/multi_worker.py`; the chief logs with
`GradientBoard.write_statistics`. The test then trains in this process on the
same global batches with an independent reference (a `GradientTape` on the
whole global batch, the global norm and the clipping in NumPy, plain
`keras.optimizers.SGD`) and compares weights and logged norms.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)

import multi_worker

import keras_gradkit  # noqa: F401  (registers the classes for load_model)

pytestmark = pytest.mark.tensorflow_only

NUM_WORKERS = 2
GLOBAL_BATCH_SIZE = 8
STEPS = 5
TIMESTEPS, FEATURES, CLASSES = 6, 3, 4
LEARNING_RATE = 0.5
CLIP_NORM = 3.0
TIMEOUT_S = 150

_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras
    import tensorflow as tf
    import keras_gradkit as gk
    import multi_worker as mw

    out_dir, learning_rate, clip_norm = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    data = np.load(os.path.join(out_dir, "data.npz"))
    x, y, global_batch_size = data["x"], data["y"], int(data["global_batch_size"])
    strategy = mw.make_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise RuntimeError(f"expected MultiWorkerMirroredStrategy, got {type(strategy).__name__}")
    with strategy.scope():
        keras.utils.set_random_seed(0)  # the same initial weights in every run
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            gk.layers.IndRNN(8, timesteps=x.shape[1]),
            gk.layers.CosineDense(int(y.max()) + 1, scale=5.0, learn_scale=True),
        ])
        optimizer = gk.optimizers.ClippedOptimizer(
            keras.optimizers.SGD(learning_rate), gk.clipping.ClipByGlobalNorm(clip_norm))
        optimizer.build(model.trainable_variables)
    task, chief = mw.task_id(strategy), mw.is_chief(strategy)
    mw.save_model(model, os.path.join(out_dir, "initial.keras"), strategy)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    train_step = mw.make_train_step(strategy, model, optimizer, loss_fn, global_batch_size)
    board = gk.callbacks.GradientBoard(os.path.join(out_dir, "logs")) if chief else None
    norms, steps = [], []
    for xb, yb in mw.distribute_batches(strategy, x, y, global_batch_size):
        train_step(xb, yb)
        norms.append(optimizer.gradient_statistics()["global_norm"])
        steps.append(int(optimizer.iterations.numpy()))
        if board is not None:
            board.write_statistics(optimizer, steps[-1])
    mw.barrier(strategy)
    np.savez(os.path.join(out_dir, f"weights_{task}.npz"), *model.get_weights())
    with open(os.path.join(out_dir, f"result_{task}.json"), "w") as f:
        json.dump({"chief": chief, "replicas": strategy.num_replicas_in_sync, "norms": norms, "steps": steps}, f)
    """
)


def _make_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(GLOBAL_BATCH_SIZE * STEPS, TIMESTEPS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=(GLOBAL_BATCH_SIZE * STEPS,)).astype("int32")
    return x, y


def _tail(path, chars=3000):
    with open(path, errors="replace") as f:
        lines = [ln for ln in f if "cuda" not in ln.lower() and "cpu_feature_guard" not in ln]
    return "".join(lines)[-chars:]


def _run_workers(out_dir):
    """Runs the workers to completion; on failure or timeout kills all and fails with their stderr."""
    env = dict(
        os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""
    )
    env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, EXAMPLES, env.get("PYTHONPATH", "")])
    processes, logs = [], []
    try:
        for index, config in enumerate(multi_worker.local_tf_configs(NUM_WORKERS)):
            log = os.path.join(out_dir, f"worker_{index}.log")
            logs.append(log)
            with open(log, "w") as stream:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            _WORKER,
                            out_dir,
                            str(LEARNING_RATE),
                            str(CLIP_NORM),
                        ],
                        env=dict(env, TF_CONFIG=config),
                        cwd=out_dir,
                        stdout=stream,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            code = multi_worker.wait_for_workers(processes, TIMEOUT_S)
        except TimeoutError as e:
            code = str(e)
        if code != 0:
            codes = [p.poll() for p in processes]
            report = "\n".join(
                f"--- worker {i} (exit code {c}):\n{_tail(log)}"
                for i, (c, log) in enumerate(zip(codes, logs))
            )
            pytest.fail(f"Multi-worker training failed ({code}).\n{report}")
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()


def _logged_scalars(log_dir, tag):
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util

    accumulator = plugin_event_accumulator.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    return {
        e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)
    }


def _gradient(model, loss_fn, x, y, divisor):
    """`d (sum of per-example losses / divisor) / d weights`, as NumPy arrays."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(loss_fn(y, model(x, training=True))) / divisor
    return [g.numpy().astype("float64") for g in tape.gradient(loss, model.trainable_variables)]


def _reference(initial_model_path, x, y):
    """Single-process training on the same global batches, clipping done in NumPy.

    Returns the final weights, the global norm of each full-batch gradient, and
    the norm of worker 0's local-shard gradient at each step.
    """
    model = keras.saving.load_model(initial_model_path)
    sgd = keras.optimizers.SGD(
        LEARNING_RATE
    )  # applies IndRNN's MaxAbs constraint, as the inner optimizer does
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    shard = GLOBAL_BATCH_SIZE // NUM_WORKERS
    norms, local_norms = [], []
    for step in range(STEPS):
        xb = x[step * GLOBAL_BATCH_SIZE : (step + 1) * GLOBAL_BATCH_SIZE]
        yb = y[step * GLOBAL_BATCH_SIZE : (step + 1) * GLOBAL_BATCH_SIZE]
        grads = _gradient(model, loss_fn, xb, yb, GLOBAL_BATCH_SIZE)
        local = _gradient(model, loss_fn, xb[:shard], yb[:shard], GLOBAL_BATCH_SIZE)
        norm = float(np.sqrt(sum(np.sum(g**2) for g in grads)))
        norms.append(norm)
        local_norms.append(float(np.sqrt(sum(np.sum(g**2) for g in local))))
        scale = min(1.0, CLIP_NORM / norm)
        sgd.apply([(g * scale).astype("float32") for g in grads], model.trainable_variables)
    return model.get_weights(), np.array(norms), np.array(local_norms)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("multi_worker"))
    x, y = _make_data()
    np.savez(os.path.join(out_dir, "data.npz"), x=x, y=y, global_batch_size=GLOBAL_BATCH_SIZE)
    start = time.perf_counter()
    _run_workers(out_dir)
    workers_seconds = time.perf_counter() - start
    results = []
    for index in range(NUM_WORKERS):
        with open(os.path.join(out_dir, f"result_{index}.json")) as f:
            result = json.load(f)
        with np.load(os.path.join(out_dir, f"weights_{index}.npz")) as weights:
            result["weights"] = [weights[f"arr_{i}"] for i in range(len(weights.files))]
        results.append(result)
    weights, norms, local_norms = _reference(os.path.join(out_dir, "initial.keras"), x, y)
    return {
        "out_dir": out_dir,
        "workers": results,
        "workers_seconds": workers_seconds,
        "reference": {"weights": weights, "norms": norms, "local_norms": local_norms},
    }


class TestMultiWorker:
    def test_cluster_of_two_workers(self, two_workers):
        workers = two_workers["workers"]
        assert [w["replicas"] for w in workers] == [NUM_WORKERS, NUM_WORKERS]
        assert [w["chief"] for w in workers] == [True, False]
        assert workers[0]["steps"] == list(range(1, STEPS + 1))

    def test_clipping_is_active_on_some_steps(self, two_workers):
        norms = two_workers["reference"]["norms"]
        assert np.any(norms > CLIP_NORM) and np.any(norms < CLIP_NORM), norms

    def test_weights_equal_single_process(self, two_workers):
        reference = two_workers["reference"]["weights"]
        for worker in two_workers["workers"]:
            assert len(worker["weights"]) == len(reference)
            for got, want in zip(worker["weights"], reference):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    def test_workers_hold_identical_weights(self, two_workers):
        first, second = (w["weights"] for w in two_workers["workers"])
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)

    def test_statistics_are_the_aggregated_global_norm(self, two_workers):
        norms = two_workers["reference"]["norms"]
        np.testing.assert_allclose(two_workers["workers"][0]["norms"], norms, rtol=1e-5)
        # Worker 0's own shard gives another norm: an un-aggregated statistic would fail above.
        local = two_workers["reference"]["local_norms"]
        assert np.all(np.abs(local - norms) > 1e-2 * norms), (local, norms)

    def test_logged_global_norm_read_back_from_event_files(self, two_workers):
        log_dir = os.path.join(two_workers["out_dir"], "logs")
        norms = two_workers["reference"]["norms"]
        logged = _logged_scalars(log_dir, "gradient_norm/global")
        assert sorted(logged) == list(range(1, STEPS + 1))
        np.testing.assert_allclose([logged[s] for s in sorted(logged)], norms, rtol=1e-5)
        clipped = _logged_scalars(log_dir, "gradient_norm/global_clipped")
        np.testing.assert_allclose(
            [clipped[s] for s in sorted(clipped)], np.minimum(norms, CLIP_NORM), rtol=1e-5
        )

    def test_only_the_chief_writes(self, two_workers):
        out_dir = two_workers["out_dir"]
        assert os.listdir(os.path.join(out_dir, "logs")) == ["train"]
        saved = sorted(name for name in os.listdir(out_dir) if name.endswith(".keras"))
        assert saved == ["initial.keras"]
