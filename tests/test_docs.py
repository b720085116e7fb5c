"""Every code example in the user documentation runs here, so none can rot.

Sybil (a kept library) finds the examples in the pages under ``docs/``; the
builders' notes under ``docs/design/`` are not a user's examples and are left
out. Each page is one test, and its examples run in the order they appear:

- a ```` ```python ```` block runs in the page's namespace, so a setup block
  that a page shows once is shared by the blocks after it;
- a ```` ```python ```` block whose first line is a comment naming a file
  (``# pipeline.py``) is that file's text, as the page tells the reader to
  save it: it is written to the working folder, not run in the namespace;
- a ```` ```sh ```` block runs line by line in a shell and must exit 0;
  ``spangraph`` there is this tree's command (``python -m spangraph.cli``)
  and ``python`` the test's interpreter;
- ``% skip: next`` (a MyST comment, visible in the page's source) skips the
  next block: only the install commands, which would change the environment.

Nothing is hidden from the reader: the test adds no code to a page. It only
gives the pages a fresh, private environment, the one a reader starts from:
an empty working folder and ``SPANGRAPH_HOME`` in a temporary folder, and
the embedded engine as the default engine (the session's ``llama``: the
engine ``run()`` would make, loaded once for the whole suite).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pathlib
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Iterator

import pytest
from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.myst import CodeBlockParser, SkipParser

from spangraph.engines import InferenceEngine, set_default

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FILE_LINE = re.compile(r"#\s*([\w./-]+\.\w+)\s*\n")


def _python(example: Example) -> None:
    source = str(example.parsed)
    named = FILE_LINE.match(source)
    if named:
        pathlib.Path(named.group(1)).write_text(source)
        return
    PythonEvaluator()(example)


def _shell(example: Example) -> None:
    for line in str(example.parsed).splitlines():
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        done = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{example.path}:{example.line}: {command!r} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )


SYBIL = Sybil(
    parsers=[
        SkipParser(),
        CodeBlockParser(language="python", evaluator=_python),
        CodeBlockParser(language="sh", evaluator=_shell),
    ],
    path=str(DOCS),
    patterns=["*.md"],
    excludes=["design/*"],
)

PAGES = sorted(p for p in DOCS.rglob("*.md") if "design" not in p.relative_to(DOCS).parts[:1])


@pytest.fixture
def reader(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    spangraph_home: pathlib.Path,
    llama: InferenceEngine,
) -> Iterator[pathlib.Path]:
    """A reader's fresh environment: an empty folder, a private home, the default engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = shlex.quote(sys.executable)
    for name, line in (("spangraph", f"{python} -m spangraph.cli"), ("python", python)):
        command = bin_dir / name
        command.write_text(f'#!/bin/sh\nexec {line} "$@"\n')
        command.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SPANGRAPH_HOME", str(spangraph_home))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("SPANGRAPH_ENGINE", raising=False)
    previous = set_default(llama)
    try:
        yield work
    finally:
        set_default(previous)


@pytest.mark.real
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(
    page: pathlib.Path, reader: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page's namespace is a module's, as a reader's script would be (pydantic
    # looks a generic model's module up in sys.modules).
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    document = SYBIL.parse(page)
    document.namespace = module.__dict__
    for example in document:
        example.evaluate()


def test_every_user_page_is_tested() -> None:
    """The pages this test runs are the site's user pages (none left out by a pattern)."""
    assert PAGES, "no documentation pages found"
    assert all(SYBIL.should_parse(p) for p in PAGES)


def test_the_reference_covers_the_public_api() -> None:
    """Each public module has its reference page, and each public name is on one.

    ``reference/spangraph.md`` documents the top-level names one by one; a
    subpackage's page documents its ``__all__`` (autodoc reads it) except the
    top-level names, which it excludes (each object is documented once). A
    value defined in a private module has no docstring autodoc can find, so
    its page documents it with a ``py:data`` directive.
    """
    from tests.test_public_api import PUBLIC

    pages = {p: p.read_text() for p in (DOCS / "reference").glob("*.md")}
    text = "\n".join(pages.values())
    documented = set(re.findall(r"\.\. automodule:: (\S+)", text))
    assert documented == set(PUBLIC), "a public module without its reference page"

    top = PUBLIC["spangraph"]
    on_top_page = set(
        re.findall(r"\.\. [\w:]+:: spangraph\.(\w+)\b", pages[DOCS / "reference" / "spangraph.md"])
    )
    assert top <= on_top_page, f"top-level names not documented: {sorted(top - on_top_page)}"

    for module, names in PUBLIC.items():
        if module == "spangraph":
            continue
        page = next(t for t in pages.values() if f".. automodule:: {module}\n" in t)
        excluded = re.search(r":exclude-members: (.*)", page)
        assert set(excluded.group(1).split(", ") if excluded else ()) == names & top, module
        obj = importlib.import_module(module)
        source = ast.parse(pathlib.Path(str(obj.__file__)).read_text())
        defined_here = {
            target.id
            for node in ast.walk(source)
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        for name in sorted(names - top):
            value = getattr(obj, name)
            if inspect.isclass(value) or inspect.isroutine(value) or name in defined_here:
                continue
            assert f".. py:data:: {module}.{name}\n" in page, f"{module}.{name} is not documented"


def test_troubleshooting_explains_every_public_error() -> None:
    """Every exception a public module exports has its entry on the troubleshooting page."""
    from tests.test_public_api import PUBLIC

    page = (DOCS / "troubleshooting.md").read_text()
    errors = {
        name
        for module, names in PUBLIC.items()
        for name in names
        if inspect.isclass(value := getattr(importlib.import_module(module), name))
        and issubclass(value, BaseException)
    }
    assert errors, "no public exceptions found"
    missing = sorted(name for name in errors if f"`{name}`" not in page)
    assert not missing, f"not on docs/troubleshooting.md: {missing}"
