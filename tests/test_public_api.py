"""The public surface: what each public module exports, pinned here.

An export added or dropped by accident fails ``test_the_public_names_are_pinned``;
change ``PUBLIC`` only on purpose (and say so in the release notes). The
convention (``docs/design/README.md``, "What is public"): every public module lists
its names in ``__all__``, and re-exports each with ``from ._x import Y as Y``
(a renamed one, ``from ._x import Z as Y``, is in ``__all__`` too), so mypy's
no-implicit-reexport rule, star imports and documentation tools agree. Every
public name has a docstring: its own for a class or a function, and a ``#:``
comment above its assignment for a value.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import types
from typing import Any

import pytest

import spangraph

ROOT = pathlib.Path(spangraph.__file__).parent

PUBLIC: dict[str, set[str]] = {
    "spangraph": {
        "CBlock",
        "ChatHistory",
        "Component",
        "ExecutionState",
        "Identity",
        "Instruction",
        "Interrupt",
        "InterruptError",
        "Message",
        "ModelOutputThunk",
        "NodeFailedError",
        "ParseError",
        "Prompt",
        "Requirement",
        "RetryPolicy",
        "Run",
        "Segment",
        "Span",
        "SpanError",
        "SpanGraph",
        "ThunkState",
        "Tool",
        "arun",
        "arun_stream",
        "ask",
        "compile",
        "generate",
        "interrupt",
        "options",
        "run",
        "sample",
        "task",
        "tool",
    },
    "spangraph.nodes": {
        "CBlock",
        "ChatHistory",
        "ChatTurn",
        "Component",
        "ComponentLike",
        "CycleError",
        "DigestError",
        "ExecutionState",
        "Instruction",
        "Message",
        "MissingProducerError",
        "ModelOutputThunk",
        "NotASpanError",
        "ParameterError",
        "ParseError",
        "Prompt",
        "Requirement",
        "Segment",
        "Span",
        "SpanError",
        "TemplateError",
        "Text",
        "ThunkNotDoneError",
        "ThunkState",
        "Timings",
        "Usage",
        "output_schema",
        "own_segment",
        "parse_as",
        "render_span",
    },
    "spangraph.graph": {
        "Interrupt",
        "InterruptError",
        "DaskExecutor",
        "Executor",
        "NodeFailedError",
        "NodeOutcome",
        "RetryPolicy",
        "Run",
        "SpanGraph",
        "Task",
        "Tool",
        "ToolArgumentsError",
        "ToolCall",
        "ToolCallError",
        "ToolDefinitionError",
        "ToolError",
        "ToolOutcome",
        "ToolRound",
        "ToolRoundsError",
        "UnknownToolError",
        "arun",
        "arun_stream",
        "ask",
        "compile",
        "freeze_gc",
        "generate",
        "interrupt",
        "run",
        "task",
        "tool",
    },
    "spangraph.engines": {
        "CANONICAL_OPTIONS",
        "Cached",
        "Capabilities",
        "Completion",
        "ContextLengthError",
        "EngineError",
        "EngineRequestError",
        "EngineResponseError",
        "EngineSpec",
        "EngineUnavailable",
        "ExecutorError",
        "Identity",
        "InferenceEngine",
        "InvalidOptionError",
        "LlamaCppEngine",
        "ModelFileError",
        "OpenAIEngine",
        "Options",
        "ParseError",
        "Request",
        "ScriptedEngine",
        "SpangraphHomeError",
        "ToolRequest",
        "TransientEngineError",
        "cached",
        "default",
        "options",
        "set_default",
        "tool_reply_text",
    },
    "spangraph.cache": {
        "AUTO",
        "CachePolicy",
        "CacheSetting",
        "CacheStats",
        "KVPrefixStore",
        "LayeredStore",
        "MemoEntry",
        "MemoStoreError",
        "MemoryStore",
        "RedisStore",
        "SQLiteStore",
        "Store",
    },
    "spangraph.sampling": {
        "BestOfN",
        "HyperParamSweep",
        "MajorityVote",
        "RejectionSampler",
        "Sampler",
        "ValidationResult",
        "length_between",
        "matches",
        "never_matches",
        "one_of",
        "parses_as",
        "sample",
        "validate",
    },
    "spangraph.tracing": {
        "COLLAPSE_THRESHOLD",
        "CONTENT_LIMIT",
        "LogDAG",
        "LogEdge",
        "LogNode",
        "SpanRecord",
        "Totals",
        "capture_content",
        "text_digest",
    },
    "spangraph.events": {
        "CacheBadEntry",
        "CacheFailed",
        "CacheHit",
        "Event",
        "GenerationRecord",
        "Listener",
        "NodeCancelled",
        "NodeDeclared",
        "NodeFailed",
        "NodeFinished",
        "NodeInterrupted",
        "NodeQueued",
        "NodeRetried",
        "NodeSkipped",
        "NodeStarted",
        "NodesAdded",
        "TokenDelta",
    },
    "spangraph.lowlevel": {
        "Claim",
        "Dispatch",
        "EventBus",
        "GenerationProducer",
        "Producer",
        "RemoteEngine",
        "SamplerProducer",
        "StateLike",
        "TaskProducer",
        "WorkerRun",
        "current_state",
        "memo_key",
        "prefix_key",
        "serve",
        "span_id",
        "use_bus",
    },
}

#: What ``events`` defines besides its public names: spangraph's own wiring, and the
#: bus that ``spangraph.lowlevel`` re-exports.
EVENTS_WIRING = {"EventBus", "current_bus", "emit", "use_bus"}


def _source_of(module_name: str) -> pathlib.Path:
    path = ROOT.joinpath(*module_name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(module_name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in ``module_name``'s source imports from."""
    if not node.level:
        return node.module or ""
    parts = module_name.split(".")
    if _source_of(module_name).name != "__init__.py":
        parts = parts[:-1]  # a plain module's imports are relative to its package
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _imports(module_name: str) -> dict[str, tuple[str, str, bool]]:
    """Each name an ``ImportFrom`` binds at the top of the module (``if`` blocks included):
    ``(module, original name, written with "as")``."""
    tree = ast.parse(_source_of(module_name).read_text())
    bound: dict[str, tuple[str, str, bool]] = {}
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If):
            todo.extend(node.body)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module_name, node)
            for alias in node.names:
                bound[alias.asname or alias.name] = (source, alias.name, alias.asname is not None)
    return bound


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_the_public_names_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ repeats a name"
    assert set(exported) == PUBLIC[module_name], (
        f"{module_name} exports {sorted(set(exported) - PUBLIC[module_name])} unexpectedly "
        f"and lost {sorted(PUBLIC[module_name] - set(exported))}: if that is on purpose, "
        "change PUBLIC here and note it for the release"
    )
    for name in exported:
        getattr(module, name)  # resolves (the lazily imported engines too)


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_no_name_is_public_by_accident(module_name: str) -> None:
    """Besides ``__all__``, a public module's namespace holds only private names and
    submodules (``events`` also defines its wiring, outside ``__all__``)."""
    module = importlib.import_module(module_name)
    stray = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in module.__all__
        and not isinstance(value, types.ModuleType)
    }
    if module_name == "spangraph.events":  # a module that defines its names, among imports
        defined = {n for n in stray if getattr(vars(module)[n], "__module__", "") == module_name}
        assert defined == EVENTS_WIRING
    else:
        assert not stray, f"{module_name} has public names outside __all__: {sorted(stray)}"


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_re_exports_are_explicit(module_name: str) -> None:
    """Every name in ``__all__`` that a module imports, it imports with ``as``; every
    ``Y as Y`` import of a package's ``__init__`` (or ``lowlevel``) is in ``__all__``."""
    module = importlib.import_module(module_name)
    imports = _imports(module_name)
    implicit = [name for name in module.__all__ if name in imports and not imports[name][2]]
    assert not implicit, f"{module_name} re-exports {implicit} without 'as'"
    if module_name != "spangraph.events":
        explicit = {name for name, (_, _, has_as) in imports.items() if has_as}
        unlisted = {name for name in explicit if not name.startswith("_")} - set(module.__all__)
        assert not unlisted, f"{module_name} imports {sorted(unlisted)} 'as' but does not export"


def _value_comment(module_name: str, name: str) -> str:
    """The ``#:`` comment above the top-level assignment of ``name`` (following the
    import it came through), or ``""``."""
    imported = _imports(module_name).get(name)
    if imported is not None and imported[0].startswith("spangraph"):
        return _value_comment(imported[0], imported[1])
    lines = _source_of(module_name).read_text().splitlines()
    for node in ast.parse("\n".join(lines)).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            above = lines[node.lineno - 2].strip()
            return above if above.startswith("#:") else ""
    return ""


def _own_docstring(obj: Any) -> str:
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        # dataclasses and named tuples write their signature when there is no docstring
        return "" if doc.startswith(f"{obj.__name__}(") else doc
    return obj.__doc__ or ""


def _documented(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    return [(module_name, name) for name in module.__all__]


@pytest.mark.parametrize(
    ("module_name", "name"),
    [pair for module_name in sorted(PUBLIC) for pair in _documented(module_name)],
)
def test_every_public_name_has_a_docstring(module_name: str, name: str) -> None:
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        assert _own_docstring(obj).strip(), f"{module_name}.{name} has no docstring"
    else:  # a value: a constant, a setting, a type alias, an instance
        assert _value_comment(module_name, name), (
            f"{module_name}.{name} is a value: document it with a '#:' comment above it"
        )


def test_lowlevel_and_public_names_do_not_overlap_by_accident() -> None:
    """A lowlevel name is not also in a user-facing module (it moved there)."""
    user_facing = set().union(
        *(names for module, names in PUBLIC.items() if module != "spangraph.lowlevel")
    )
    assert not PUBLIC["spangraph.lowlevel"] & user_facing
