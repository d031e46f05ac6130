"""The documentation runs as written.

- Markdown: the ```python (or ```py) blocks of README.md and of every
  docs/**/*.md run in order, in one namespace and working folder per file,
  in the test's process, one test per file (Keras's global state reset
  before each file). A block whose first
  non-empty line starts with `# fragment` is skipped; other fence languages
  (bash, console, text, none) are not run.
- Docstrings: every public class and function of the public subpackages, and
  the public methods of those classes, run their examples: `>>>` lines with
  doctest (ELLIPSIS, NORMALIZE_WHITESPACE; fence lines around them are
  ignored) and fenced python blocks without `>>>` as scripts. Each docstring
  starts from empty globals, so an example imports what it uses.
- API reference: every public name has a `::: keras_gradkit.<sub>.<Name>`
  directive in docs/api/*.md, and every directive resolves.
"""

import doctest
import importlib
import inspect
import linecache
import os
import re
import textwrap
import traceback
from pathlib import Path

import keras
import pytest
from test_docstrings import SUBPACKAGES

REPO = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = SUBPACKAGES
RUNNABLE_LANGUAGES = {"python", "py"}
TRACEBACK_TAIL_CHARS = 4000

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^:::[ \t]+(?P<path>[\w.]+)[ \t]*$", re.M)


# ---------------------------------------------------------------- Markdown


def fenced_blocks(text):
    """Yields `(language, first_code_line, source)` for each fenced block.

    `first_code_line` is 1-based. Fences may be indented (inside list items);
    that indentation is removed from the code.
    """
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        indent, fence = len(opening["indent"].expandtabs()), opening["fence"]
        info = opening["info"].strip().lstrip("{").lstrip(".")
        language = info.split()[0].rstrip("}").lower() if info else ""
        body, j = [], i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(_remove_indent(lines[j], indent))
            j += 1
        yield language, i + 2, "\n".join(body)
        i = j + 1


def _remove_indent(line, indent):
    expanded = line.expandtabs()
    stripped = expanded.lstrip(" ")
    return expanded[min(indent, len(expanded) - len(stripped)) :]


def is_fragment(source):
    first = next((line.strip() for line in source.split("\n") if line.strip()), "")
    return first.lower().startswith("# fragment")


def runnable_blocks(text):
    """The `{"line", "source"}` python blocks of a Markdown text, fragments left out."""
    return [
        {"line": line, "source": source}
        for language, line, source in fenced_blocks(text)
        if language in RUNNABLE_LANGUAGES and not is_fragment(source)
    ]


def markdown_files():
    files = [REPO / "README.md"] if (REPO / "README.md").exists() else []
    files += sorted((REPO / "docs").rglob("*.md"))
    return [path.relative_to(REPO).as_posix() for path in files]


def _reset_keras():
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session(free_memory=False)


def run_markdown_files(blocks_by_file, workdir):
    """Runs each file's blocks (`{file: blocks}`) in this process: per file
    one namespace (`__name__ == "__main__"`, nothing imported) and one
    working folder under `workdir`, Keras's global state (dtype policy,
    session) reset between files. Returns `{file: failure message}` for the
    files whose blocks failed; a file stops at its first failing block.

    In this process rather than a fresh one: the namespaces are as empty as
    a fresh interpreter's, and a second import of the backend (and, on
    TensorFlow, a second AutoGraph conversion of every traced function) cost
    5 to 10 s per backend and proved nothing more."""
    workdir, failures, cwd = Path(workdir), {}, os.getcwd()
    try:
        for number, (file, blocks) in enumerate(blocks_by_file.items()):
            folder = workdir / f"file{number}"
            folder.mkdir(parents=True, exist_ok=True)
            os.chdir(folder)
            if number:  # the test's fixture reset it before the first file
                _reset_keras()
            namespace = {"__name__": "__main__"}
            for block in blocks:
                # Padding makes traceback line numbers the Markdown file's line numbers.
                source = "\n" * (block["line"] - 1) + block["source"] + "\n"
                linecache.cache[file] = (len(source), None, source.splitlines(True), file)
                try:
                    exec(compile(source, file, "exec"), namespace)
                except Exception as e:
                    # Without this function's frame: the traceback starts in the block.
                    trace = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
                    failures[file] = (
                        f"{file}: the python block starting at line {block['line']} failed.\n"
                        f"--- traceback ---\n{''.join(trace)[-TRACEBACK_TAIL_CHARS:]}"
                    )
                    break
            linecache.cache.pop(file, None)
    finally:
        os.chdir(cwd)
        _reset_keras()
    return failures


def run_markdown_blocks(file, blocks, workdir):
    """Runs one file's `blocks`. Returns None, or a failure message."""
    return run_markdown_files({file: blocks}, workdir).get(file)


def _markdown_files_with_blocks():
    return [
        file
        for file in markdown_files()
        if runnable_blocks((REPO / file).read_text(encoding="utf-8"))
    ]


MARKDOWN_FILES_WITH_BLOCKS = _markdown_files_with_blocks()


@pytest.mark.backend_free
def test_markdown_files_with_python_blocks_are_found():
    assert "README.md" in MARKDOWN_FILES_WITH_BLOCKS and len(MARKDOWN_FILES_WITH_BLOCKS) > 1, (
        MARKDOWN_FILES_WITH_BLOCKS
    )


# One test per file (the files share nothing: one namespace and folder each,
# Keras's state reset between them), so that pytest-xdist spreads the ~1 min
# of examples over its workers instead of running them all in one test.
@pytest.mark.parametrize("file", MARKDOWN_FILES_WITH_BLOCKS)
def test_markdown_code_blocks_run(file, tmp_path):
    blocks = runnable_blocks((REPO / file).read_text(encoding="utf-8"))
    failure = run_markdown_blocks(file, blocks, tmp_path)
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.mark.backend_free
class TestMarkdownExtraction:
    TEXT = textwrap.dedent(
        """\
        # Title

        ```python
        x = 1
        ```

        ```bash
        pip install keras-gradkit
        ```

        ```
        plain text
        ```

        1. In a list:

           ```py
           y = x + 1
           ```

        ```python
        # fragment: needs a model
        model.fit(x)
        ```

        ````python title="nested"
        s = '''
        ```
        '''
        ````
        """
    )

    def test_only_python_blocks_run_and_fragments_are_skipped(self):
        blocks = runnable_blocks(self.TEXT)
        assert [b["line"] for b in blocks] == [4, 18, 27]
        assert [b["source"] for b in blocks] == ["x = 1", "y = x + 1", "s = '''\n```\n'''"]

    def test_languages(self):
        assert [language for language, _, _ in fenced_blocks(self.TEXT)] == [
            "python",
            "bash",
            "",
            "py",
            "python",
            "python",
        ]

    def test_blocks_share_a_namespace_and_a_failure_names_file_and_line(self, tmp_path):
        blocks = runnable_blocks(self.TEXT)
        assert run_markdown_blocks("guide.md", blocks, tmp_path) is None
        failing = blocks + [{"line": 40, "source": "z = 1\nundefined_name"}]
        message = run_markdown_blocks("guide.md", failing, tmp_path)
        assert "guide.md: the python block starting at line 40 failed" in message
        assert 'File "guide.md", line 41' in message and "NameError" in message


# -------------------------------------------------------------- docstrings


def public_names(sub):
    """`(name, object)` for the public classes and functions of `keras_gradkit.<sub>`."""
    module = importlib.import_module(f"keras_gradkit.{sub}")
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    found = []
    for name in sorted(names):
        obj = getattr(module, name)
        origin = getattr(obj, "__module__", None) or ""
        defined_here = origin == module.__name__ or origin.startswith(module.__name__ + ".")
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and defined_here:
            found.append((name, obj))
    return found


def all_public_objects():
    return [(f"{sub}.{name}", obj) for sub in PUBLIC_MODULES for name, obj in public_names(sub)]


def _docstrings(qualname, obj):
    """`(name, function or class, docstring)` for `obj` and its own public methods."""
    found = [(qualname, obj, obj.__doc__)]
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            function = (
                member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            )
            if inspect.isfunction(function) or isinstance(member, property):
                found.append((f"{qualname}.{name}", function, member.__doc__))
    return [(name, source, doc) for name, source, doc in found if doc]


def _has_example(doc):
    return bool(re.search(r"^\s*Examples?:\s*$", doc, re.M)) or ">>>" in doc


def _source_location(obj):
    try:
        return inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1] - 1
    except (OSError, TypeError):
        return None, 0


def _run_docstring(name, source, doc):
    """Runs one docstring's examples. Returns (number of examples run, failure reports)."""
    filename, lineno = _source_location(source)
    # Fence lines (``` around doctest lines, for MkDocs) are not doctest output.
    text = "\n".join("" if _FENCE.match(line) else line for line in doc.split("\n"))
    test = doctest.DocTestParser().get_doctest(
        text, {"__name__": "__doctest__"}, name, filename, lineno
    )
    reports = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=reports.append, clear_globs=True)
    count = len(test.examples)
    lines = doc.expandtabs().split("\n")
    dedented = lines[0].strip() + "\n" + textwrap.dedent("\n".join(lines[1:]))
    for block in runnable_blocks(dedented):
        if ">>>" in block["source"]:
            continue
        count += 1
        where = f"{filename}:{lineno + block['line']}"
        try:
            exec(compile(block["source"], where, "exec"), {"__name__": "__doctest__"})
        except Exception as e:
            reports.append(f"{name}: the python block at {where} raised {type(e).__name__}: {e}")
    return count, reports


OBJECTS_WITH_EXAMPLES = [
    (qualname, obj)
    for qualname, obj in all_public_objects()
    if any(_has_example(doc) for _, _, doc in _docstrings(qualname, obj))
]


@pytest.mark.parametrize(
    "qualname, obj", OBJECTS_WITH_EXAMPLES, ids=[q for q, _ in OBJECTS_WITH_EXAMPLES]
)
def test_docstring_examples_run(qualname, obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (TensorBoard logs)
    failures = []
    for name, source, doc in _docstrings(qualname, obj):
        if not _has_example(doc):
            continue
        count, reports = _run_docstring(name, source, doc)
        if count == 0:
            reports.append(
                f"{name}: its Example section has no `>>>` lines and no python block to run."
            )
        failures += reports
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


# ------------------------------------------------------------ API reference


def api_reference_problems(api_dir, public):
    """`(missing, unresolved)`: public names without a `:::` directive in
    `api_dir/**/*.md`, and directives that name no object."""
    directives = {}
    for page in sorted(Path(api_dir).rglob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            directives[match["path"]] = page.name
    missing = sorted(set(public) - set(directives))
    unresolved = sorted(
        f"{path} (in {page})" for path, page in directives.items() if not _resolves(path)
    )
    return missing, unresolved


def _resolves(path):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attribute in parts[i:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False
        return True
    return False


def _public_paths():
    return [f"keras_gradkit.{qualname}" for qualname, _ in all_public_objects()]


@pytest.mark.backend_free
def test_api_reference_lists_every_public_name():
    api_dir = REPO / "docs" / "api"
    if not api_dir.is_dir():
        pytest.skip("docs/api does not exist yet: no API reference to check")
    missing, unresolved = api_reference_problems(api_dir, _public_paths())
    assert not missing, (
        f"public names with no `::: keras_gradkit.<module>.<Name>` directive in docs/api: {missing}"
    )
    assert not unresolved, f"directives in docs/api that name no object: {unresolved}"


@pytest.mark.backend_free
def test_api_reference_check_finds_missing_and_unresolved(tmp_path):
    public = _public_paths()
    assert (
        "keras_gradkit.layers.IndRNN" in public and "keras_gradkit.clipping.global_norm" in public
    )
    assert not any(
        p.rsplit(".", 1)[1].startswith("_") or "keras_gradkit_export" in p for p in public
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "layers.md").write_text(
        "# Layers\n\n" + "".join(f"::: {p}\n\n" for p in public[:-1])
    )
    (tmp_path / "sub" / "more.md").write_text(
        f"::: {public[-1]}\n    options:\n      show_source: false\n"
    )
    assert api_reference_problems(tmp_path, public) == ([], [])
    (tmp_path / "sub" / "more.md").write_text(
        "::: keras_gradkit.layers.NoSuchLayer\n::: keras_gradkit.nosuchmodule.X\n"
    )
    missing, unresolved = api_reference_problems(tmp_path, public)
    assert missing == [public[-1]]
    assert unresolved == [
        "keras_gradkit.layers.NoSuchLayer (in more.md)",
        "keras_gradkit.nosuchmodule.X (in more.md)",
    ]
