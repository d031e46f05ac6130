"""Argument checks shared by every public class (private).

One rule everywhere: a value of the wrong type (a string, a bool where a
number is expected, a float such as 2.5 or 2.0 where an integer is expected)
raises `TypeError`; a value of the right type outside the allowed range raises
`ValueError`. Both carry the same message shape:

    Argument `units` must be a positive integer. Received: units=2.5

Pure Python: imports nothing from keras_gradkit, Keras or NumPy, so any module
(layers, initializers, constraints, clipping policies, optimizers, callbacks)
can use it. NumPy scalars pass because they register as `numbers` types.
"""

import math
import numbers
import re


def _message(name, expected, value, hint=""):
    hint = f" {hint}" if hint else ""
    return f"Argument `{name}` must be {expected}. Received: {name}={value!r}{hint}"


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def bool_arg(name, value):
    """Returns `value` if it is a bool; raises `TypeError` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(_message(name, "a bool", value))
    return value


def positive_int(name, value, allow_none=False):
    """Returns `value` as an int >= 1 (or None when allowed)."""
    if value is None and allow_none:
        return None
    expected = "a positive integer" + (" or None" if allow_none else "")
    if not _is_integer(value):
        raise TypeError(_message(name, expected, value))
    if value < 1:
        raise ValueError(_message(name, expected, value))
    return int(value)


def non_negative_int(name, value):
    """Returns `value` as an int >= 0."""
    if not _is_integer(value):
        raise TypeError(_message(name, "a non-negative integer", value))
    if value < 0:
        raise ValueError(_message(name, "a non-negative integer", value))
    return int(value)


def integer(name, value, allow_none=False):
    """Returns `value` as an int of any sign (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not _is_integer(value):
        raise TypeError(_message(name, "an integer" + (" or None" if allow_none else ""), value))
    return int(value)


def optional_bool(name, value):
    """Returns `value` if it is a bool or None; raises `TypeError` otherwise."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(_message(name, "a bool or None", value))
    return value


def float_at_least(name, value, minimum, allow_none=False, hint=""):
    """Returns `value` as a finite float >= `minimum` (or None when allowed)."""
    if value is None and allow_none:
        return None
    expected = f"a number >= {minimum!r}" + (" or None" if allow_none else "")
    if not _is_real(value):
        raise TypeError(_message(name, expected, value, hint))
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(_message(name, expected, value, hint))
    return float(value)


def finite_float(name, value, nonzero=False):
    """Returns `value` as a finite float (non-zero if asked)."""
    expected = "a finite non-zero number" if nonzero else "a finite number"
    if not _is_real(value):
        raise TypeError(_message(name, expected, value))
    if not math.isfinite(value) or (nonzero and value == 0):
        raise ValueError(_message(name, expected, value))
    return float(value)


def positive_float(name, value, allow_none=False, hint=""):
    """Returns `value` as a finite float > 0 (or None when allowed)."""
    if value is None and allow_none:
        return None
    expected = "a positive number" + (" or None" if allow_none else "")
    if not _is_real(value):
        raise TypeError(_message(name, expected, value, hint))
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(_message(name, expected, value, hint))
    return float(value)


def fraction(name, value):
    """Returns a rate such as `dropout` as a float in [0, 1).

    1.0 is rejected: it would drop every unit.
    """
    expected = "a float in [0, 1)"
    if not _is_real(value):
        raise TypeError(_message(name, expected, value))
    if not 0.0 <= value < 1.0:
        raise ValueError(_message(name, expected, value))
    return float(value)


def one_of(name, value, allowed):
    """Returns `value` if it is one of `allowed` (compared with `==`, types
    kept apart so that `True` is not `1`); raises `ValueError` otherwise."""
    for option in allowed:
        if type(option) is type(value) and option == value:
            return value
    choices = ", ".join(repr(a) for a in allowed)
    raise ValueError(_message(name, f"one of {choices}", value))


def int_tuple(name, value, rank):
    """Returns a positive int, or a sequence of `rank` positive ints, as a
    tuple of `rank` ints."""
    expected = f"a positive integer or a tuple of {rank} positive integers"
    values = (value,) * rank if _is_integer(value) else value
    if not isinstance(values, (tuple, list)) or not all(_is_integer(v) for v in values):
        raise TypeError(_message(name, expected, value))
    if len(values) != rank or not all(v >= 1 for v in values):
        raise ValueError(_message(name, expected, value))
    return tuple(int(v) for v in values)


def patterns(name, value, allow_none=False):
    """Returns regular expressions as a tuple of strings (None when allowed).

    A single string is one pattern; otherwise a list or tuple of strings.
    Each must compile (`re.compile`); they are matched with `re.search`.
    """
    if value is None and allow_none:
        return None
    found = (value,) if isinstance(value, str) else value
    if not isinstance(found, (list, tuple)) or not all(isinstance(p, str) for p in found):
        expected = "a regular expression string or a list of them" + (
            ", or None" if allow_none else ""
        )
        raise TypeError(_message(name, expected, value))
    for pattern in found:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(
                _message(name, "valid regular expressions", value, f"({pattern!r}: {e})")
            ) from None
    return tuple(found)
