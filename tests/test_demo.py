"""`make demo` (examples/demo.py) on tiny settings, in a fresh process as the
Makefile runs it: nothing on stderr, and both runs' GradientBoard logs (read
back with TensorBoard's reader) hold histograms, norms and time-gradient
images. The Makefile's demo target installs TensorFlow only."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensor_tags(run_dir):
    acc = pea.EventAccumulator(os.path.join(run_dir, "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {
        tag: acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in acc.Tags()["tensors"]
    }, acc


# `make demo` runs on TensorFlow (its install has no other backend); the same
# `adding_problem.main` with GradientBoard runs on every backend in
# `test_examples.py::test_adding_problem`.
@pytest.mark.tensorflow_only
def test_demo_writes_both_runs_quietly(tmp_path):
    logdir = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell: the demo quiets the backend itself
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "demo.py"),
            "--seq-len",
            "12",
            "--steps",
            "5",
            "--eval-every",
            "5",
            "--logdir",
            str(logdir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert result.stderr == "", result.stderr[-3000:]
    assert f"--logdir {logdir}" in result.stdout and "time_gradient/input" in result.stdout
    # What the doctor found, per run, and where to see it.
    assert "The gradient doctor (TensorBoard's Text dashboard, tag `diagnosis`):" in result.stdout
    assert re.search(r"^    IndRNN .+$", result.stdout, re.M)
    assert re.search(r"^    LSTM .+$", result.stdout, re.M)
    for run in ("indrnn_T12", "lstm_T12"):
        tags, acc = tensor_tags(logdir / run)
        assert tags["gradient_norm/global"] == "scalars"
        norm = tensor_util.make_ndarray(acc.Tensors("gradient_norm/global")[-1].tensor_proto)
        assert np.isfinite(norm) and norm > 0
        assert any(t.startswith("gradients/") and p == "histograms" for t, p in tags.items()), (
            run,
            tags,
        )
        assert tags["time_gradient/input"] == "images", (run, tags)
        assert tags["clipping/clipped_fraction"] == "scalars"


@pytest.mark.backend_free
def test_make_demo_installs_the_package_with_tensorflow_only():
    """`make demo` has its own stamp, installing `.[tensorflow]` and nothing
    else; `make test` keeps the full install and prints the 15 slowest tests."""
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    variables = dict(re.findall(r"^(\w+) [:?]?= *(.*)$", makefile, flags=re.M))
    prerequisites = dict(re.findall(r"^([\w$()-]+):([^=\n]*)$", makefile, flags=re.M))
    recipes = dict(re.findall(r"^([\w$()-]+):[^=\n]*\n((?:\t.*\n)+)", makefile, flags=re.M))
    demo_stamp = prerequisites["demo"].split()[0]
    assert demo_stamp != "$(STAMP)" and variables[demo_stamp[2:-1]] == "$(VENV)/.installed-demo"
    install = [line for line in recipes[demo_stamp].splitlines() if "pip install" in line]
    assert len(install) == 1 and install[0].split("pip install", 1)[1].split() == [
        "--quiet",
        "-e",
        '".[tensorflow]"',
    ]
    assert f"touch {demo_stamp}" in recipes[demo_stamp]
    assert "examples/demo.py" in recipes["demo"]
    assert prerequisites["test"].split() == ["$(STAMP)"]
    assert ".[test,examples,docs,tensorflow,jax]" in recipes["$(STAMP)"]
    assert "--durations=15" in variables["PYTEST_ARGS"]
