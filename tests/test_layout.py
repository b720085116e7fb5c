"""The package layout's two rules, read from the source (every import, those inside
functions and ``TYPE_CHECKING`` blocks included).

1. Dependencies point one way (the design's table): a folder imports only the
   folders below it, and nothing in a folder imports the top level
   (``spangraph/__init__.py``, ``lowlevel``, ``cli``), which may import anything.
2. A module outside a package imports that package's public names from the
   package, and anything else only from its ``_internal`` module, never from
   one of its other private modules (``docs/design/README.md``, "What is public").
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import spangraph

ROOT = pathlib.Path(spangraph.__file__).parent

#: What each folder (or top-level module) may import, from DESIGN.md's table.
MAY_IMPORT: dict[str, set[str]] = {
    "nodes": set(),
    "cache": {"nodes"},
    "events": {"nodes"},
    "engines": {"nodes", "cache", "events"},
    "sampling": {"nodes", "engines"},
    "tracing": {"nodes", "events"},
    "graph": {"nodes", "engines", "cache", "tracing", "events"},
}
#: The top level: it may import every folder, and no folder imports it.
TOP = {"__init__", "lowlevel", "cli"}
#: Packages whose private modules others reach only through ``_internal``.
PACKAGES = {"nodes", "cache", "engines", "sampling", "tracing", "graph"}


def _modules() -> Iterator[tuple[pathlib.Path, list[str]]]:
    for path in sorted(ROOT.rglob("*.py")):
        yield path, list(path.relative_to(ROOT).with_suffix("").parts)


def _targets(parts: list[str], tree: ast.AST) -> Iterator[tuple[int, list[str]]]:
    """Each spangraph module an import in the module at ``parts`` names, as its path
    below ``spangraph`` (``from .. import events`` names ``["events"]``)."""
    package = parts[:-1]  # a module's imports are relative to its package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            elif node.module and node.module.split(".")[0] == "spangraph":
                base = []
            else:
                continue
            module = node.module.split(".") if node.module else []
            if not node.level:
                module = module[1:]
            target = [*base, *module]
            if node.module is None or not target or target[-1] in PACKAGES:
                # ``from .. import events`` / ``from ..tracing import _semconv``: the
                # names may be modules themselves
                for alias in node.names:
                    yield node.lineno, [*target, alias.name]
            else:
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "spangraph":
                    yield node.lineno, names[1:]


def _unit(parts: list[str]) -> str:
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def test_dependencies_point_one_way() -> None:
    wrong = []
    for path, parts in _modules():
        source = _unit(parts)
        for line, target in _targets(parts, ast.parse(path.read_text())):
            if not target:
                continue
            imported = target[0]
            if imported not in MAY_IMPORT and imported not in TOP:
                continue  # a name of the top package (a lazy attribute), not a module
            if source in TOP or imported == source:
                continue
            if imported in TOP or imported not in MAY_IMPORT[source]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {'.'.join(target)}")
    assert not wrong, "imports against the design's direction:\n" + "\n".join(wrong)


def test_other_packages_use_only_the_internal_interface() -> None:
    wrong = []
    for path, parts in _modules():
        source = _unit(parts)
        for line, target in _targets(parts, ast.parse(path.read_text())):
            if len(target) < 2 or target[0] not in PACKAGES or target[0] == source:
                continue
            private = target[1].startswith("_") and target[1] != "_internal"
            if private:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {'.'.join(target)}")
    assert not wrong, "private modules imported from another package:\n" + "\n".join(wrong)


def test_the_rules_see_what_they_check() -> None:
    """The walk above finds imports of every form it must judge."""
    tree = ast.parse(
        "from ..nodes._span import as_span\n"
        "from ..tracing import _semconv as sc\n"
        "from .. import events\n"
        "def f():\n    from spangraph.cache._kv import private_dir\n"
    )
    found = [target for _, target in _targets(["graph", "_x"], tree)]
    assert found == [
        ["nodes", "_span"],
        ["tracing", "_semconv"],
        ["events"],
        ["cache", "_kv"],
    ]
