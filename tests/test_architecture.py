"""The package's dependencies point one way (`docs/architecture.md`).

Each package of keras_gradkit may import only the packages below it in
`ALLOWED`; nothing imports `callbacks`; the modules form no import cycle;
and no module imports a private (underscore) name or module of another
package. The shared internals at the top of the package (`_validation`,
`_cache`, `api_export`) may be imported by any package. The checks read the
sources with `ast` (no backend is touched), imports inside functions included.
"""

import ast
import pathlib
from collections import defaultdict

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_gradkit"
SHARED = {"_validation", "_cache", "api_export"}

# What each package may import, besides the shared internals: the map of
# docs/architecture.md. `<top>` is `keras_gradkit/__init__.py`.
ALLOWED = {
    "backend": set(),
    "initializers": set(),
    "constraints": set(),
    "clipping": {"backend"},
    "layers": {"backend", "initializers", "constraints"},
    "recording": {"backend", "clipping"},
    "optimizers": {"backend", "clipping", "recording"},
    "diagnostics": {"backend"},
    "callbacks": {"backend", "clipping", "recording", "optimizers", "diagnostics"},
    "<top>": {"clipping", "constraints", "diagnostics", "initializers", "layers", "optimizers"},
}
ALLOWED.update({name: set() for name in SHARED})


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _package(module):
    """The package a module belongs to (`backend`, `layers`, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<top>"


def _imports(path):
    """`(line, imported module, imported name or None)` for each keras_gradkit import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    found.append((node.lineno, full, None))
                else:
                    found.append((node.lineno, node.module, alias.name))
    return [f for f in found if f[1].split(".")[0] == "keras_gradkit"]


def _edges():
    """`{module: {(line, imported module, name)}}` over the whole package."""
    return {module: _imports(path) for module, path in MODULES.items()}


@pytest.mark.backend_free
def test_every_package_imports_only_what_it_may():
    problems = []
    for module, imports in _edges().items():
        source = _package(module)
        assert source in ALLOWED, f"{module}: package {source!r} is missing from ALLOWED"
        for line, target, _ in imports:
            target_package = _package(target)
            if target_package in (source, "<top>") or target_package in SHARED:
                continue
            if target_package not in ALLOWED[source]:
                problems.append(f"{MODULES[module].name}:{line}: {source} imports {target}")
    assert not problems, "Imports against the direction of docs/architecture.md:\n" + "\n".join(
        problems
    )


@pytest.mark.backend_free
def test_the_backend_is_the_floor_and_callbacks_the_top():
    for module, imports in _edges().items():
        for _, target, _ in imports:
            if _package(module) == "backend":
                assert target.startswith("keras_gradkit.backend"), f"{module} imports {target}"
            if _package(target) == "callbacks":
                assert _package(module) == "callbacks", f"{module} imports {target}"


@pytest.mark.backend_free
def test_no_private_name_is_imported_across_packages():
    problems = []
    for module, imports in _edges().items():
        for line, target, name in imports:
            if _package(target) in (_package(module), "<top>") or _package(target) in SHARED:
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            if private_module or (name is not None and name.startswith("_")):
                problems.append(f"{module}:{line}: {target}{'.' + name if name else ''}")
    assert not problems, "Private names imported from another package:\n" + "\n".join(problems)


@pytest.mark.backend_free
def test_no_import_cycles():
    graph = defaultdict(set)
    for module, imports in _edges().items():
        for _, target, _ in imports:
            # `from keras_gradkit import backend` runs keras_gradkit/__init__.py
            # first, but that is the package being imported, not a cycle.
            if target != "keras_gradkit" and target in MODULES and target != module:
                graph[module].add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "Import cycle: " + " -> ".join(cycle)


def _find_cycle(graph):
    """A list of modules forming a cycle in `graph`, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "graph,has_cycle",
    [
        ({"a": {"b"}, "b": {"c"}}, False),
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ],
)
def test_the_cycle_finder_finds_planted_cycles(graph, has_cycle):
    assert (_find_cycle(graph) is not None) == has_cycle
