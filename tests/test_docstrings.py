"""Every public class and function documents its arguments as its signature
has them: the `Args:` section of the docstring against the signature of
`__init__` (classes) or of the function.

- every named parameter (not `self`, not `*args` / `**kwargs`) is documented,
  as its own entry (`name: ...`, or `a, b: ...` for several) or by reference
  (`units: as in `keras_gradkit.layers.IndRNNCell`, and so are `activation`,
  ...`), the referenced object documenting the names it is cited for;
- every documented name is a parameter (`*name` / `**name` the variadic one);
- entries follow the order of the signature, and no name is documented twice;
- the layers listed in DOCUMENTED_VARIADICS also document their `**kwargs`.

The public objects are those of the public subpackages (their `__all__`, or
their public names defined in the package), and must include everything
registered with `keras_gradkit_export`. Reading docstrings touches no
backend: these tests run once, on TensorFlow (`backend_free`).
"""

import importlib
import importlib.util
import inspect
import re

import keras
import pytest

import keras_gradkit

pytestmark = pytest.mark.backend_free

SUBPACKAGES = (
    "layers",
    "initializers",
    "constraints",
    "clipping",
    "optimizers",
    "callbacks",
    "diagnostics",
)

# The layers whose docstring documents the base-layer `**kwargs` (the checks
# in their test files this test replaces asserted it).
DOCUMENTED_VARIADICS = {
    "layers.CosineConv1D": {"**kwargs"},
    "layers.CosineConv2D": {"**kwargs"},
    "layers.CosineDense": {"**kwargs"},
    "layers.GroupNorm": {"**kwargs"},
    "layers.ResidualIndRNN": {"**kwargs"},
    "layers.WeightNormalization": {"**kwargs"},
    "initializers.GateBias": {"**gate_values"},
}

# Known gaps, each to be fixed in the docstring (then this entry removed:
# the xfail is strict).
KNOWN_GAPS = {}

_ENTRY = re.compile(r"^(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?:(?:\s|$)")
_REFERENCE = re.compile(r"^as in `(?P<target>keras_gradkit(?:\.\w+)+)`(?P<rest>.*)$", re.S)


def public_objects():
    """`{qualname: object}` for the public classes and functions, qualname
    `<subpackage>.<Name>`."""
    found = {}
    for sub in SUBPACKAGES:
        if importlib.util.find_spec(f"keras_gradkit.{sub}") is None:
            continue
        module = importlib.import_module(f"keras_gradkit.{sub}")
        names = getattr(module, "__all__", None) or [
            n for n in vars(module) if not n.startswith("_")
        ]
        for name in sorted(names):
            obj = getattr(module, name)
            origin = getattr(obj, "__module__", None) or ""
            defined_here = origin == module.__name__ or origin.startswith(module.__name__ + ".")
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and defined_here:
                found[f"{sub}.{name}"] = obj
    for name in getattr(keras_gradkit, "__all__", ()):
        obj = getattr(keras_gradkit, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            found.setdefault(name, obj)
    return found


PUBLIC = public_objects()


def signature_parameters(obj):
    """`(named, variadic)`: the named parameters in order, and the variadic
    ones as `*name` / `**name`."""
    function = obj.__init__ if inspect.isclass(obj) else obj
    parameters = list(inspect.signature(function).parameters.values())
    if inspect.isclass(obj) and parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    variadic = [
        ("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name
        for p in parameters
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return named, variadic


def args_entries(doc):
    """The `Args:` section of `doc` as `[(names, text)]`, or None without one.
    Raises ValueError on a line at entry indentation that is not an entry."""
    lines = inspect.cleandoc(doc or "").split("\n")
    for i, line in enumerate(lines):
        if line.strip() != "Args:":
            continue
        header = len(line) - len(line.lstrip())
        body = []
        for other in lines[i + 1 :]:
            if other.strip() and len(other) - len(other.lstrip()) <= header:
                break
            body.append(other)
        filled = [b for b in body if b.strip()]
        if not filled:
            return []
        indent = len(filled[0]) - len(filled[0].lstrip())
        entries = []
        for other in filled:
            depth = len(other) - len(other.lstrip())
            if depth == indent:
                match = _ENTRY.match(other.strip())
                if not match:
                    raise ValueError(f"not an `name: description` entry of Args: {other.strip()!r}")
                names = [n.strip() for n in match["names"].split(",")]
                entries.append((names, other.strip()[match.end() :].strip()))
            elif depth > indent and entries:
                entries[-1] = (entries[-1][0], entries[-1][1] + " " + other.strip())
            else:
                raise ValueError(f"Args line indented less than its first entry: {other.strip()!r}")
        return entries
    return None


def _resolve(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def docstring_problems(obj, documented_variadics=()):
    """The mismatches between `obj`'s Args section and its signature."""
    named, variadic = signature_parameters(obj)
    try:
        entries = args_entries(obj.__doc__)
    except ValueError as e:
        return [str(e)]
    if entries is None:
        return [f"no Args section, but the signature has {named}"] if named else []
    problems, direct, seen = [], [], []
    for names, text in entries:
        for name in names:
            if name.startswith("*"):
                if name not in variadic:
                    problems.append(
                        f"documents {name}, which is not in the signature {variadic or '(no variadic)'}"
                    )
            elif name not in named:
                problems.append(f"documents `{name}`, which is not a parameter")
            else:
                direct.append(name)
            seen.append(name)
        reference = _REFERENCE.match(text)
        if reference and "and so are" in reference["rest"]:
            cited = re.findall(r"`(\w+)`", reference["rest"].split("and so are", 1)[1])
            try:
                target = _resolve(reference["target"])
            except (ImportError, AttributeError):
                problems.append(f"refers to `{reference['target']}`, which does not exist")
                continue
            target_names = {
                n for entry_names, _ in (args_entries(target.__doc__) or []) for n in entry_names
            }
            for name in cited:
                if name not in named:
                    problems.append(
                        f"documents `{name}` (as in {reference['target']}), which is not a parameter"
                    )
                if name not in target_names:
                    problems.append(
                        f"says `{name}` is as in {reference['target']}, which does not document it"
                    )
                seen.append(name)
    missing = [name for name in named if name not in seen]
    if missing:
        problems.append(f"parameters not documented in Args: {missing}")
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if twice:
        problems.append(f"documented more than once: {twice}")
    in_signature_order = [name for name in named if name in direct]
    if direct != in_signature_order:
        problems.append(
            f"Args entries {direct} are not in the signature's order {in_signature_order}"
        )
    for name in documented_variadics:
        if name not in seen:
            problems.append(f"does not document {name}")
    return problems


def _params():
    params = []
    for qualname, obj in sorted(PUBLIC.items()):
        marks = (
            [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[qualname])]
            if qualname in KNOWN_GAPS
            else []
        )
        params.append(pytest.param(qualname, obj, id=qualname, marks=marks))
    return params


@pytest.mark.parametrize("qualname, obj", _params())
def test_args_section_matches_signature(qualname, obj):
    problems = docstring_problems(obj, DOCUMENTED_VARIADICS.get(qualname, ()))
    assert not problems, f"keras_gradkit.{qualname}:\n  " + "\n  ".join(problems)


def test_every_exported_object_is_checked():
    registered = {
        name: obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_gradkit>")
    }
    assert len(registered) >= 20
    checked = set(map(id, PUBLIC.values()))
    assert not [name for name, obj in registered.items() if id(obj) not in checked]
    assert {
        "layers.IndRNN",
        "clipping.chain",
        "callbacks.GradientBoard",
        "optimizers.ClippedOptimizer",
    } <= set(PUBLIC)
    assert set(DOCUMENTED_VARIADICS) | set(KNOWN_GAPS) <= set(PUBLIC)


class _Planted:
    """A class with every mistake the check looks for.

    Args:
        units: the first one.
        extra: not in the signature.
        seed, units: documented twice, and out of order.
        rate: as in `keras_gradkit.layers.IndRNNCell`, and so are `dropout`
            and `nonexistent`.
    """

    def __init__(self, units, rate, seed, missing, dropout, **kwargs):
        pass


def test_the_check_finds_planted_mistakes():
    problems = docstring_problems(_Planted, {"**kwargs"})
    expected = [
        "documents `extra`, which is not a parameter",
        "documents `nonexistent` (as in keras_gradkit.layers.IndRNNCell), which is not a parameter",
        "says `nonexistent` is as in keras_gradkit.layers.IndRNNCell, which does not document it",
        "parameters not documented in Args: ['missing']",
        "documented more than once: ['units']",
        "Args entries ['units', 'seed', 'units', 'rate'] are not in the signature's order ['units', 'rate', 'seed']",
        "does not document **kwargs",
    ]
    assert problems == expected

    def function(grads):
        """No Args section."""

    assert docstring_problems(function) == ["no Args section, but the signature has ['grads']"]

    def variadic(*policies):
        """A summary.

        Args:
            *policies: the policies.
            **options: not in the signature.
        """

    assert docstring_problems(variadic) == [
        "documents **options, which is not in the signature ['*policies']"
    ]

    def malformed(value):
        """A summary.

        Args:
            value - a dash instead of a colon.
        """

    assert docstring_problems(malformed) == [
        "not an `name: description` entry of Args: 'value - a dash instead of a colon.'"
    ]
