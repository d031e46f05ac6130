"""The examples run with `--gradboard` on tiny settings, and what GradientBoard
wrote is read back with TensorBoard's own reader."""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    if EXAMPLES not in sys.path:  # as when the script runs: its siblings are importable
        sys.path.insert(0, EXAMPLES)
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", os.path.join(EXAMPLES, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_run(run_dir):
    """{tag: (plugin name, last value)} of the run's tensor events."""
    acc = pea.EventAccumulator(os.path.join(run_dir, "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {
        tag: (
            acc.SummaryMetadata(tag).plugin_data.plugin_name,
            tensor_util.make_ndarray(acc.Tensors(tag)[-1].tensor_proto),
        )
        for tag in acc.Tags()["tensors"]
    }


def assert_gradient_board_wrote(run_dir, time_probe=False):
    events = read_run(run_dir)
    plugin, norm = events["gradient_norm/global"]
    assert plugin == "scalars" and np.isfinite(norm) and norm > 0
    assert any(
        tag.startswith("gradients/") and plugin == "histograms"
        for tag, (plugin, _) in events.items()
    )
    assert any(tag.startswith("update_ratio/") for tag in events)
    if time_probe:
        assert events["time_gradient/input"][0] == "images"
        assert events["time_gradient/reach"][0] == "scalars"
    return events


def test_adding_problem(tmp_path):
    module = load_example("adding_problem")
    png = tmp_path / "time_gradient.png"
    argv = [
        "--model",
        "indrnn",
        "--seq-len",
        "16",
        "--steps",
        "10",  # one evaluation, one epoch of GradientBoard (its time probe costs seconds each)
        "--eval-every",
        "10",
        "--units",
        "8",
        "--val-size",
        "32",
        "--logdir",
        str(tmp_path),
        "--gradboard",
        "--time-gradient-png",
        str(png),
    ]
    final = module.main(argv)
    assert np.isfinite(final)
    assert_gradient_board_wrote(os.path.join(tmp_path, "indrnn_T16"), time_probe=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_bias(tmp_path):
    module = load_example("gate_bias")
    argv = [
        "--timesteps",
        "12",
        "--units",
        "4",
        "--train-samples",
        "64",
        "--val-samples",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--variants",
        "keras",
        "forget1",
        "--logdir",
        str(tmp_path),
        "--gradboard",
    ]
    keras_run, forget1 = module.main(argv)
    # Same kernels, same bias: keras.layers.LSTM and LSTM(forget_bias=1.0) train identically.
    assert keras_run["curve"] == pytest.approx(forget1["curve"], rel=1e-5)
    events = assert_gradient_board_wrote(os.path.join(tmp_path, "keras"), time_probe=True)
    # Adam(global_clipnorm=1.0) is kept by the auto-wrap and reported as the threshold.
    assert float(events["clipping/threshold"][1]) == 1.0


def test_clipping(tmp_path):
    module = load_example("clipping")
    argv = [
        "--samples",
        "100",
        "--epochs",
        "1",
        "--units",
        "8",
        "--policies",
        "global_norm",
        "--logdir",
        str(tmp_path),
        "--gradboard",
    ]
    (result,) = module.main(argv)
    events = assert_gradient_board_wrote(os.path.join(tmp_path, "global_norm"))
    assert float(events["clipping/threshold"][1]) == 1.0
    assert float(events["clipping/skipped_steps"][1]) == 0.0
    assert result["steps"] > 0


def test_normalization(tmp_path):
    module = load_example("normalization")
    argv = [
        "--depth",
        "3",
        "--width",
        "8",
        "--groups",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "2048",  # the whole split in one batch: one train and one test step to compile
        "--variants",
        "groupnorm",
        "--logdir",
        str(tmp_path),
        "--gradboard",
    ]
    module.main(argv)
    assert_gradient_board_wrote(os.path.join(tmp_path, "mlp", "groupnorm"))


# Compiling a recurrent train step costs seconds per model: TensorFlow's trace
# (the smoke mode runs it eagerly) and JAX's XLA compile of the train, test and
# probe functions. To keep the test within seconds, PyTorch (eager, cheap)
# runs every family on both tasks, TensorFlow the residual family on both
# tasks and JAX the residual family on the adding problem; TensorFlow also
# builds the other families (building costs JAX seconds of tracing too).
DEEP_RNN_SMOKE = {
    "torch": [],
    "tensorflow": ["--models", "residual"],
    "jax": ["--tasks", "adding", "--models", "residual"],
}


def test_deep_rnn_smoke(tmp_path, capsys):
    """N = 2, one tiny epoch: a Markdown row per model and task,
    GradientBoard's gradient-across-depth tags read back with TensorBoard's
    reader, and the figure drawn from them."""
    module = load_example("deep_rnn")
    for task in (module.digits_task(0, 60), module.adding_task(0, 12, 16, 1, 1, 16)):
        for kind in module.MODELS if keras.backend.backend() == "tensorflow" else ():
            for setup in module.SETUPS:
                model = module.build_model(kind, 2, 4, task, setup)
                assert tuple(model.output.shape) == (None, 10 if task.name == "digits" else 1)
                names = {layer.name for layer in model.layers}
                official_end = kind == "residual" and setup == "official"
                assert ("last_ind_rnn_bn" in names) == official_end
    args = module.parse_args(["--smoke"])  # what the run below trains: the official setup
    assert args.setup == "official"
    assert module.make_optimizer(args.setup, args.learning_rate).clipvalue == 10.0
    png = tmp_path / "depth.png"
    argv = ["--smoke", "--logdir", str(tmp_path), "--figure", str(png)] + DEEP_RNN_SMOKE[
        keras.backend.backend()
    ]
    results = module.main(argv)
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("| digits |", "| adding |"))
    ]
    assert (
        len(rows)
        == len(results)
        == {"torch": 6, "tensorflow": 2, "jax": 1}[keras.backend.backend()]
    )
    for (task, kind, depth), result in results.items():
        row = f"| {task} | {module.MODEL_NAMES[kind]} | {depth} | "
        assert sum(line.startswith(row) for line in rows) == 1
        assert np.isfinite(result["metric"])
        depth_logs = module.read_depth_logs(result["run_dir"])
        assert set(depth_logs) == set(module.DEPTH_TAGS)
        norms = depth_logs["gradient_depth/norms"][-1][1]
        # The smoke run is the official setup. A residual block is one layer,
        # and so is a recurrent layer with its BN: input weight, block, last
        # recurrent layer, head; plain: two recurrent layers, head.
        assert norms.shape == (depth + 1 if kind != "residual" else depth // 2 + 3,)
        assert np.all(np.isfinite(norms)) and np.all(norms >= 0)
        # A plain ReLU stack can saturate the softmax at initialization (all
        # gradients zero, the ratio NaN) with some backends' random draws.
        logged = float(depth_logs["gradient_depth/first_to_last"][-1][1])
        expected = module.first_to_last(norms)
        assert logged == pytest.approx(expected, rel=1e-5, nan_ok=True)
        assert logged == pytest.approx(result["ratio_logged"], nan_ok=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diagnose_quick(tmp_path, capsys):
    """`examples/diagnose.py --quick`: the facts that hold at any size. The
    NaN batch is reported at the input before anything is measured; a
    healthy MLP is not flagged; Adam at a learning rate of 10 is seen in
    training only (large_updates), not at initialization.

    It runs `main(argv)` in this process, as the other examples here do (its
    `__main__` block only calls `main()`): a fresh process imported the
    backend again and, on TensorFlow, converted every traced function with
    AutoGraph again (TensorFlow: 14.7 s in a subprocess, 7.8 s here), which
    proves nothing about the script."""
    module = load_example("diagnose")
    module.main(["--quick", "--logdir", str(tmp_path)])
    stdout = capsys.readouterr().out
    rows = {
        cells[0]: cells
        for cells in (
            [c.strip() for c in line.strip("|").split("|")]
            for line in stdout.splitlines()
            if line.startswith("| ")
        )
    }
    # row | model | diagnose at init | GradientBoard | final train loss | val acc
    assert set(rows) == {"row", "mlp_small", "nan_input", "learning_rate_10"}
    assert rows["mlp_small"][2:4] == ["nothing", "nothing"]
    assert rows["nan_input"][2] == "non_finite_gradient@input"
    assert rows["learning_rate_10"][2] == "nothing"
    assert "large_updates@" in rows["learning_rate_10"][3]
    assert "1 non-finite entries in the batch" in stdout
    for row in ("mlp_small", "nan_input", "learning_rate_10"):
        assert os.listdir(tmp_path / row / "train"), row  # GradientBoard's event file
