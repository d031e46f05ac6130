"""The `backend_free` guard of conftest.py can fail: a marked test that makes
a tensor or a variable fails, one that only checks an argument passes, a
module first imported under the guard works afterwards, and on another
backend marked tests are deselected, not skipped.

Each check runs pytest in a subprocess on a small test file next to a copy of
conftest.py; these meta-tests make no tensor themselves."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.backend_free

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = textwrap.dedent(
    """
    import keras
    import numpy as np
    import pytest

    import keras_gradkit


    @pytest.mark.backend_free
    def test_makes_a_tensor():
        keras.ops.convert_to_tensor([1.0, 2.0])


    @pytest.mark.backend_free
    def test_calls_an_op():
        keras.ops.add(np.ones(2), 1.0)


    @pytest.mark.backend_free
    def test_makes_ones():
        keras.ops.ones((2,))


    @pytest.mark.backend_free
    def test_makes_a_variable():
        keras.Variable(np.zeros(2))


    @pytest.mark.backend_free
    def test_builds_a_layer():
        keras.layers.Dense(2)(np.ones((1, 3)))


    @pytest.mark.backend_free
    def test_swallows_the_failure():
        try:
            keras.ops.convert_to_tensor(1.0)
        except BaseException:
            pass


    @pytest.mark.backend_free
    def test_checks_an_argument():
        with pytest.raises(ValueError, match="units"):
            keras_gradkit.layers.IndRNN(units=0)


    @pytest.mark.backend_free
    def test_imports_a_module_under_the_guard():
        import fresh_module  # binds convert_to_tensor by name while the guard is on

        assert callable(fresh_module.to_tensor)


    def test_that_module_works_after_the_guard():
        import fresh_module

        assert float(fresh_module.to_tensor(2.0)) == 2.0


    def test_unmarked_makes_a_tensor():
        assert float(keras.ops.convert_to_tensor(1.0)) == 1.0
    """
)

TOUCHING = [
    "test_makes_a_tensor",
    "test_calls_an_op",
    "test_makes_ones",
    "test_makes_a_variable",
    "test_builds_a_layer",
    "test_swallows_the_failure",
]


def _run(tmp_path, backend):
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "fresh_module.py").write_text(
        "from keras.src.backend import convert_to_tensor as to_tensor\n"
    )
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-rA",
            "-q",
            "-c",
            os.path.join(ROOT, "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "--confcutdir",
            str(tmp_path),
            str(tmp_path / "test_cases.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    return result.stdout + result.stderr


def _outcomes(output):
    outcomes = {}
    for line in output.splitlines():
        for word in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
            if line.startswith(word + " "):
                outcomes[line.split("::")[1].split()[0]] = word
    return outcomes


def test_guard_fails_marked_tests_that_touch_the_backend(tmp_path):
    output = _run(tmp_path, "tensorflow")
    outcomes = _outcomes(output)
    assert outcomes == {
        **{name: "FAILED" for name in TOUCHING},
        "test_checks_an_argument": "PASSED",
        "test_imports_a_module_under_the_guard": "PASSED",
        "test_that_module_works_after_the_guard": "PASSED",
        "test_unmarked_makes_a_tensor": "PASSED",
    }, output
    assert "6 failed, 4 passed" in output, output
    assert output.count("must not be marked `backend_free`") >= len(TOUCHING), output
    for name, what in (
        ("test_makes_a_variable", "created a keras.Variable"),
        ("test_makes_ones", "called tensorflow.ones"),
        ("test_calls_an_op", "called keras.src.backend.tensorflow.numpy.convert_to_tensor"),
    ):
        assert (
            f"test_cases.py::{name} is marked `backend_free` but touched the tensorflow backend: it {what}"
            in output
        ), (
            name,
            output,
        )


def test_marked_tests_are_deselected_on_other_backends(tmp_path):
    output = _run(tmp_path, "jax")
    assert _outcomes(output) == {
        "test_that_module_works_after_the_guard": "PASSED",
        "test_unmarked_makes_a_tensor": "PASSED",
    }, output
    assert "2 passed, 8 deselected" in output, output
    assert "skipped" not in output, output
