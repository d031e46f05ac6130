"""Test set-up. The backend comes from KERAS_BACKEND (TensorFlow by default);
`make test` runs the suite once per backend.

Mark a test `@pytest.mark.tensorflow_only` when it is about TensorFlow itself
(SavedModel export and serving, LiteRT, `tf.distribute`): it is skipped on the
other backends.

Mark a test `@pytest.mark.backend_free` when it never touches a backend:
argument validation that raises before any tensor or variable exists,
configuration or documentation text, pure-Python bookkeeping, reading source.
Running it three times would test the same Python three times, so it runs on
the first backend of `make test` (TensorFlow) only; on the other backends it
is *deselected* rather than skipped, so the ~30-minute `make test` does not
spend time on it nor print hundreds of skips that would hide the real ones.

On TensorFlow a marked test runs under a guard (`_backend_free_guard`): while
it runs, creating a `keras.Variable` (hence any weight, seed generator, metric
or optimizer state) or converting anything to a backend tensor
(`keras.ops.convert_to_tensor`, the backend's `convert_to_tensor` that every
`keras.ops.*` function calls, and TensorFlow's own tensor constructors) fails
the test with a message that says it must not be marked `backend_free`. The
guard wraps the test only: `_fresh_keras_state` (its `set_random_seed`; it
leaves out `clear_session` for these tests) runs before it is installed. A
violation the code under test swallows (`except BaseException`) still fails
the test at the end of its call. Everything else runs on all three backends.
"""

import gc
import os
import shutil
import sys
import tempfile
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# JAX: XLA's compile is most of the JAX run's time (the models are tiny), so
# - LLVM optimizes the generated CPU code at level 0, not 3: the same HLO
#   programs (XLA's own passes, fusion included, are unchanged) compiled in
#   half the time; `tests/test_ind_rnn.py` took 300 s of CPU, 135 s with it;
# - XLA's CPU backend emits its fusions with its older loop emitters, not
#   the MLIR "fusion emitters" (the same fusions, the same HLO; only the
#   code generation differs): a tiny op compiled in 16-22 ms instead of
#   40, and `test_ind_rnn.py`, `test_cosine_norm.py` and `test_diagnose.py`
#   took 52 s instead of 77 on 2 cores (jaxlib 0.10);
# - the compiled programs go to a persistent compilation cache, one folder
#   per run that the pytest-xdist workers and the processes the tests start
#   inherit through the environment: a program one of them compiled (an
#   initializer's draw, the same small model in another test or process) is
#   read back instead of compiled again.
# Set before the backend is imported (XLA reads its flags once); the run
# that made the folder removes it (`pytest_unconfigure`).
_JAX_CACHE_DIR_MADE_HERE = None
if os.environ["KERAS_BACKEND"] == "jax":
    for _flag in ("xla_backend_optimization_level=0", "xla_cpu_use_fusion_emitters=false"):
        if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --" + _flag).strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _JAX_CACHE_DIR_MADE_HERE = tempfile.mkdtemp(prefix="keras_gradkit_jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE_DIR_MADE_HERE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import keras
import pytest
from keras.src import backend as keras_backend
from keras.src.backend.common import variables as keras_variables
from keras.src.ops import core as keras_ops_core

# Keras and the backend, imported above, live for the whole session: their
# objects stay out of every garbage collection (each one is cheaper).
gc.freeze()

BACKEND = keras.backend.backend()
# The one backend on which `backend_free` tests run (the first of `make test`).
BACKEND_FREE_BACKEND = "tensorflow"

# TensorFlow's own tensor constructors that keras.ops.* reach without going
# through convert_to_tensor (`keras.ops.ones` is `tf.ones`, ...). Functions
# only: patching a class such as `tf.Variable` would break isinstance checks.
FRAMEWORK_ENTRY_POINTS = {
    "tensorflow": (
        "tensorflow",
        (
            "convert_to_tensor",
            "constant",
            "ones",
            "zeros",
            "fill",
            "range",
            "eye",
            "ones_like",
            "zeros_like",
        ),
    ),
}

_VIOLATIONS = pytest.StashKey[list]()


def pytest_collection_modifyitems(config, items):
    if BACKEND != BACKEND_FREE_BACKEND:
        kept, deselected = [], []
        for item in items:
            (deselected if item.get_closest_marker("backend_free") else kept).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
        skip = pytest.mark.skip(reason=f"about TensorFlow itself; the backend is {BACKEND}")
        for item in items:
            if "tensorflow_only" in item.keywords:
                item.add_marker(skip)
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers > 1:
        items[:] = _slow_tests_first(items, workers, config.getoption("dist", None))


# The tests that take tens of seconds on 2 cores: (`file::test` or a prefix of
# it, a group name for tests that share a module-scoped fixture, which must
# run once, the backends it costs time on, its rough CPU seconds: per test,
# or per group, its fixture). Under pytest-xdist each worker's queue starts
# with its share of them (the heaviest first, each to the least loaded
# worker) so that none of them is what one worker still runs while the
# other has finished, and a group stays in one worker's queue, out of reach
# of work stealing (which takes from the end of a queue). Only the order
# changes; a test missing from this list is only scheduled later.
_ALL = ("tensorflow", "jax", "torch")
_SAVED = "test_gradient_board_trust.py::TestGradientBoardTrust::test_"
SLOW_TESTS = (
    ("test_train_export_serve.py", "export", ("tensorflow",), 50),
    ("test_multi_worker.py", "multi_worker", ("tensorflow",), 25),
    ("test_optimizers_distributed.py", "mirrored", ("tensorflow",), 20),
    (_SAVED + "saved_and_reloaded_state_is_the_same_with_or_without", "saved", _ALL, 25),
    (_SAVED + "optimizer_variable_paths_are_the_same_with_or_without", "saved", _ALL, 25),
    ("test_demo.py::test_demo_writes_both_runs_quietly", "", ("tensorflow",), 22),
    ("test_distribution_jax.py::test_two_processes_on_loopback", "", ("jax",), 30),
    ("test_distribution_jax.py::test_two_devices", "", ("jax",), 10),
    ("test_docs.py::test_markdown_code_blocks_run[README.md]", "", _ALL, 15),
    ("test_docs.py::test_markdown_code_blocks_run", "", _ALL, 5),
    ("test_gradient_board_workflow.py::test_preemption_ends_as_an_uninterrupted_run", "", _ALL, 18),
    ("test_conftest_guard.py::test_guard_fails_marked_tests_that_touch_the_backend", "", _ALL, 8),
    ("test_conftest_guard.py::test_marked_tests_are_deselected_on_other_backends", "", _ALL, 8),
    ("test_gradient_board_workflow.py::test_saved_model_reloads_with_the_users", "", _ALL, 6),
    (
        "test_gradient_board_workflow.py::test_everything_is_written_and_read_back",
        "",
        ("jax", "torch"),
        7,
    ),
    ("test_examples.py", "", _ALL, 8),
    ("test_gradient_board_integration.py::test_mirrored_strategy", "", ("tensorflow",), 8),
)


def _slow_entry(item):
    """The longest SLOW_TESTS prefix of `item`'s `file::test` on this backend, or None."""
    path, _, test = item.nodeid.partition("::")
    name = f"{path.rsplit('/', 1)[-1]}::{test}"
    found = None
    for entry in SLOW_TESTS:
        prefix, _, backends, _ = entry
        if BACKEND in backends and name.startswith(prefix):
            if found is None or len(prefix) > len(found[0]):
                found = entry
    return found


def _slow_tests_first(items, workers, dist):
    """`items` reordered: with `--dist worksteal` (the first worker gets the
    first len // workers items, and so on), each worker's share starts with
    its slow tests; otherwise all slow tests come first. Deterministic, as
    pytest-xdist needs the same order on every worker."""
    groups, rest = {}, []  # {entry (shared) or test id: (cost, [items])}
    for item in items:
        entry = _slow_entry(item)
        if entry is None or item.get_closest_marker("skip") is not None:
            rest.append(item)
            continue
        _, group, _, cost = entry
        # A group costs its fixture once; other entries cost that much per test.
        key = group or item.nodeid
        groups.setdefault(key, (cost, []))[1].append(item)
    costed = sorted(groups.values(), key=lambda cost_group: -cost_group[0])  # stable
    if dist != "worksteal":
        return [item for _, group in costed for item in group] + rest
    sizes, left = [], len(items)
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    shares, loads = [[] for _ in range(workers)], [0.0] * workers
    for cost, group in costed:
        fits = [i for i in range(workers) if len(shares[i]) + len(group) <= sizes[i]]
        if not fits:
            return [item for _, group in costed for item in group] + rest
        i = min(fits, key=lambda i: loads[i])
        shares[i] += group
        loads[i] += cost
    ordered = []
    for i in range(workers):
        take = sizes[i] - len(shares[i])
        ordered += shares[i] + rest[:take]
        rest = rest[take:]
    return ordered


def pytest_report_header(config):
    return f"keras backend: {BACKEND}"


def pytest_unconfigure(config):
    if _JAX_CACHE_DIR_MADE_HERE is not None:
        shutil.rmtree(_JAX_CACHE_DIR_MADE_HERE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_keras_state(request):
    """Each test starts with float32 policy, a clean session and fixed seeds.

    `clear_session` resets Keras's global state (names, the TensorFlow graph
    and kernel cache, torch.compile's cache) without its `gc.collect`: a full
    collection over the backends' heaps takes 0.4 to 0.9 s and was a third of
    the suite's time, while Python's own generational collection, which
    still runs, bounds the memory. A `backend_free` test has no session to
    clean (it makes no variable): it gets the policy and the seeds only."""
    keras.config.set_dtype_policy("float32")
    if request.node.get_closest_marker("backend_free") is None:
        keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


_binding_cache = {"modules": -1, "bindings": []}


def _convert_to_tensor_bindings():
    """Every (module, name) in keras, keras_gradkit and the tests bound to the
    backend's `convert_to_tensor` or to `keras.ops.convert_to_tensor` (modules
    import them by name, so patching one module is not enough)."""
    if _binding_cache["modules"] != len(sys.modules):
        targets = {id(keras_backend.convert_to_tensor), id(keras_ops_core.convert_to_tensor)}
        bindings = []
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith(("keras", "test_", "tests")):
                continue
            for attr, value in list(vars(module).items()):
                if id(value) in targets:
                    bindings.append((module, attr))
        _binding_cache.update(modules=len(sys.modules), bindings=bindings)
    return _binding_cache["bindings"]


def _tripwire(item, what, original):
    def touched(*args, **kwargs):
        message = (
            f"{item.nodeid} is marked `backend_free` but touched the {BACKEND} backend: {what}. "
            "A test that creates a keras.Variable or a backend tensor must not be marked "
            "`backend_free` (it has to run on every backend); remove the mark."
        )
        item.stash[_VIOLATIONS].append(message)
        pytest.fail(message)

    touched.backend_free_original = original
    return touched


def _restore_imported_during(modules_before):
    """A module first imported while the guard was on may have bound a
    tripwire by name (`from keras.src.backend import convert_to_tensor`): the
    monkeypatch undo does not reach it, so put the original back."""
    for name in set(sys.modules) - modules_before:
        module = sys.modules.get(name)
        if module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, types.FunctionType) and "backend_free_original" in value.__dict__:
                setattr(module, attr, value.backend_free_original)


@pytest.fixture(autouse=True)
def _backend_free_guard(request, _fresh_keras_state):
    """For `backend_free` tests: any keras Variable or backend tensor fails the
    test (see the module docstring). Requests `_fresh_keras_state` so that the
    state reset runs before the guard is installed (and after it is removed)."""
    if request.node.get_closest_marker("backend_free") is None:
        yield
        return
    item = request.node
    item.stash[_VIOLATIONS] = []
    modules_before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        init = keras_variables.Variable.__init__
        mp.setattr(
            keras_variables.Variable,
            "__init__",
            _tripwire(item, "it created a keras.Variable", init),
        )
        for module, attr in _convert_to_tensor_bindings():
            original = getattr(module, attr)
            mp.setattr(
                module, attr, _tripwire(item, f"it called {module.__name__}.{attr}", original)
            )
        if BACKEND in FRAMEWORK_ENTRY_POINTS:
            framework_name, names = FRAMEWORK_ENTRY_POINTS[BACKEND]
            framework = sys.modules.get(framework_name)
            for attr in names if framework is not None else ():
                original = getattr(framework, attr)
                mp.setattr(
                    framework, attr, _tripwire(item, f"it called {framework_name}.{attr}", original)
                )
        yield
    if len(sys.modules) != len(modules_before):
        _restore_imported_during(modules_before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # A violation caught by the code under test (`except BaseException`) must
    # still fail the test.
    result = yield
    violations = item.stash.get(_VIOLATIONS, [])
    if violations:
        pytest.fail(violations[0], pytrace=False)
    return result
