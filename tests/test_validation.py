"""The same argument mistake gets the same exception type and message shape in
every public layer, initializer and constraint (keras_gradkit._validation)."""

import inspect
import re

import keras
import numpy as np
import pytest

import keras_gradkit
from keras_gradkit import _validation


def _public_classes():
    found = []
    for module, base in (
        (keras_gradkit.layers, keras.layers.Layer),
        (keras_gradkit.initializers, keras.initializers.Initializer),
        (keras_gradkit.constraints, keras.constraints.Constraint),
        (keras_gradkit.clipping, keras_gradkit.clipping.ClippingPolicy),
        (keras_gradkit.optimizers, keras.optimizers.Optimizer),
        (keras_gradkit.callbacks, keras.callbacks.Callback),
    ):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                not name.startswith("_")
                and issubclass(cls, base)
                and cls.__module__.startswith("keras_gradkit")
            ):
                found.append(cls)
    return sorted(set(found), key=lambda c: c.__name__)


PUBLIC_CLASSES = _public_classes()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides conftest's per-test `clear_session`: these tests only build
    constructors that raise, and clearing the session ~170 times dominates."""
    yield


# (argument, bad value, exception): a wrong type is a TypeError, a value of
# the right type out of range a ValueError.
CASES = [
    ("units", 2.5, TypeError),
    ("units", 2.0, TypeError),
    ("units", "8", TypeError),
    ("units", True, TypeError),
    ("units", 0, ValueError),
    ("units", -3, ValueError),
    ("filters", 2.5, TypeError),
    ("filters", 0, ValueError),
    ("dropout", 1.0, ValueError),
    ("dropout", -0.1, ValueError),
    ("dropout", "0.5", TypeError),
    ("recurrent_dropout", 1.0, ValueError),
    ("recurrent_dropout", -0.1, ValueError),
    ("use_bias", 1, TypeError),
    ("use_bias", "yes", TypeError),
    ("epsilon", 0.0, ValueError),
    ("epsilon", -1e-3, ValueError),
    ("epsilon", "1e-3", TypeError),
    ("norm_epsilon", 0.0, ValueError),
    ("norm_epsilon", None, TypeError),
    ("max_value", -1.0, ValueError),
    ("max_value", "1", TypeError),
    ("max_timesteps", 1, ValueError),
    ("max_timesteps", "10", TypeError),
    ("chrono_timesteps", 1, ValueError),
    ("chrono_timesteps", "10", TypeError),
    ("timesteps", 1.5, TypeError),
    ("timesteps", 0, ValueError),
    ("recurrent_max_abs", -1.0, ValueError),
    ("recurrent_max_abs", "1", TypeError),
    ("reset_after", 1, TypeError),
    ("layout", "rnn", ValueError),
    ("data_init", 1, TypeError),
    ("rnn_kernel", "hidden", ValueError),
    ("rnn_kernel", None, ValueError),
    ("center", 1, TypeError),
    ("learn_scale", "yes", TypeError),
    ("centered", None, TypeError),
    ("max_norm", 0.0, ValueError),
    ("max_norm", "1", TypeError),
    ("percentile", 0.0, ValueError),
    ("percentile", "10", TypeError),
    ("history_size", 0, ValueError),
    ("history_size", 2.5, TypeError),
    ("clipping", -0.01, ValueError),
    ("clipping", "0.01", TypeError),
    ("record_gradients", 1, TypeError),
    ("record_update_norms", "yes", TypeError),
    ("histogram_freq", -1, ValueError),
    ("histogram_freq", 1.5, TypeError),
    ("write_plots", 1, TypeError),
    ("policies", [1], TypeError),
    ("state_dim", 2.5, TypeError),
    ("state_dim", 0, ValueError),
    ("r_max", 1.5, ValueError),
    ("r_max", "1", TypeError),
    ("max_phase", 0.0, ValueError),
]


def _required_arguments(cls):
    params = inspect.signature(cls.__init__).parameters
    values = {
        "units": 4,
        "filters": 2,
        "kernel_size": 2,
        "max_timesteps": 10,
        "max_value": 1.0,
        "state_dim": 4,
    }
    required = {
        name: values[name]
        for name, p in params.items()
        if p.default is inspect.Parameter.empty and name in values
    }
    if "layer" in params:
        required["layer"] = keras.layers.Dense(2)
    if "inner_optimizer" in params:
        required["inner_optimizer"] = keras.optimizers.SGD()
        required["policy"] = keras_gradkit.clipping.NoClip()
    if "log_dir" in params:
        required["log_dir"] = "runs/unused"
    return required


def _applicable():
    params = []
    for cls in PUBLIC_CLASSES:
        signature = inspect.signature(cls.__init__).parameters
        # The constructors raise before any variable exists, except that an
        # optimizer wrapper's required inner optimizer (SGD) makes variables.
        marks = () if "inner_optimizer" in signature else (pytest.mark.backend_free,)
        for name, value, error in CASES:
            if name in signature:
                params.append(
                    pytest.param(
                        cls, name, value, error, id=f"{cls.__name__}-{name}={value!r}", marks=marks
                    )
                )
    return params


APPLICABLE = _applicable()


@pytest.mark.backend_free
def test_every_public_class_is_covered():
    names = {cls.__name__ for cls in PUBLIC_CLASSES}
    assert {
        "LSTM",
        "GRU",
        "IndRNN",
        "CosineDense",
        "GroupNorm",
        "WeightNormalization",
        "Chrono",
        "MaxAbs",
    } <= names
    covered = {p.values[0] for p in APPLICABLE}
    # Every class with constructor arguments is covered (NoClip and SkipNonFinite have none).
    with_arguments = {
        c
        for c in PUBLIC_CLASSES
        if set(inspect.signature(c.__init__).parameters) - {"self", "args", "kwargs", "name"}
    }
    assert covered == with_arguments


@pytest.mark.parametrize("cls, name, value, error", APPLICABLE)
def test_same_mistake_same_error(cls, name, value, error):
    kwargs = {**_required_arguments(cls), name: value}
    pattern = (
        rf"^Argument `{name}` must be .+\. Received: {name}={re.escape(repr(value))}( \(.*\))?$"
    )
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls", [c for c in PUBLIC_CLASSES if "dropout" in inspect.signature(c.__init__).parameters]
)
def test_dropout_just_below_one_is_accepted(cls):
    layer = cls(**_required_arguments(cls), dropout=0.99)
    cell = getattr(layer, "cell", layer)
    assert cell.dropout == pytest.approx(0.99)


@pytest.mark.backend_free
class TestHelpers:
    def test_integer_rule(self):
        assert _validation.positive_int("units", np.int64(3)) == 3
        with pytest.raises(
            TypeError, match=r"^Argument `units` must be a positive integer\. Received: units=2\.5$"
        ):
            _validation.positive_int("units", 2.5)
        with pytest.raises(ValueError, match=r"Received: units=0$"):
            _validation.positive_int("units", 0)
        assert _validation.positive_int("timesteps", None, allow_none=True) is None

    def test_fraction(self):
        assert _validation.fraction("dropout", 0) == 0.0
        assert _validation.fraction("dropout", np.float32(0.5)) == 0.5
        for bad in (1.0, -0.1, float("nan")):
            with pytest.raises(ValueError, match=r"must be a float in \[0, 1\)"):
                _validation.fraction("dropout", bad)
        with pytest.raises(TypeError, match="dropout"):
            _validation.fraction("dropout", False)

    def test_numbers(self):
        assert _validation.positive_float("epsilon", 1) == 1.0
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="epsilon"):
                _validation.positive_float("epsilon", bad)
        with pytest.raises(ValueError, match="non-zero"):
            _validation.finite_float("scale", 0.0, nonzero=True)
        with pytest.raises(ValueError, match=r"must be a number >= 2"):
            _validation.float_at_least("max_timesteps", 1.5, 2)

    def test_choices_and_tuples(self):
        assert _validation.one_of("use_cudnn", True, ("auto", True, False)) is True
        with pytest.raises(
            ValueError, match=r"one of 'auto', True, False\. Received: use_cudnn=1$"
        ):
            _validation.one_of("use_cudnn", 1, ("auto", True, False))
        assert _validation.int_tuple("strides", 2, 2) == (2, 2)
        assert _validation.int_tuple("strides", [1, 3], 2) == (1, 3)
        with pytest.raises(ValueError, match="strides"):
            _validation.int_tuple("strides", (1, 2, 3), 2)
        with pytest.raises(TypeError, match="strides"):
            _validation.int_tuple("strides", 1.5, 2)
