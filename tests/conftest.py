"""Test set-up. The backend comes from KERAS_BACKEND (TensorFlow by default);
`make test` runs the suite once per backend.

Mark a test `@pytest.mark.tensorflow_only` when it is about TensorFlow itself
(SavedModel export and serving, LiteRT, `tf.distribute`): it is skipped on the
other backends. Everything else runs on all three.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"about TensorFlow itself; the backend is {BACKEND}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"keras backend: {BACKEND}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with float32 policy, a clean session and fixed seeds."""
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
