"""``FILE[:NAME]``: what ``spangraph run`` runs, found in a Python file.

``NAME`` is a top-level name of the file holding a span, a list (or tuple)
of spans, a ``SpanGraph``, or a function taking no arguments that returns
one of those. Without ``NAME`` the file's top level is looked at, in this
order, and the first rule that finds something decides:

1. a name ``graph`` (any of the above);
2. the only ``SpanGraph``;
3. the only generation: a thunk (what ``generate()``, ``@task`` and
   ``sample()`` return) or a list of thunks.

Two candidates under one rule is a usage error that names them. ``main``
is not looked for: by convention it runs the program itself, with its own
engine and cache, which would bypass the command's options.

The file is imported as a module named after it (``__name__`` is not
``"__main__"``, so an ``if __name__ == "__main__":`` block does not run),
with its folder first on ``sys.path``, as ``python FILE`` would have it.
"""

from __future__ import annotations

import importlib.util
import inspect
import pathlib
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from .. import CBlock, Component, ModelOutputThunk, SpanGraph
from ..nodes import ComponentLike

#: What ``NAME`` may hold, for messages.
RUNNABLE = "a span, a list of spans, a SpanGraph, or a function of no arguments returning one"


@dataclass(frozen=True)
class Target:
    """What to run: ``roots`` for ``run()`` (spans, or one ``SpanGraph``) and their
    names for the outputs (``answers[0]``...)."""

    roots: list[Any]
    names: list[str]


class LoadError(Exception):
    """The file raised while it was imported, or ``NAME``'s function raised: the
    message holds the traceback from the user's code down (none of spangraph's)."""


def split(text: str) -> tuple[pathlib.Path, str | None]:
    """``FILE[:NAME]`` as a path and a name; a usage error unless FILE is a file."""
    path = pathlib.Path(text)
    if path.is_file():
        return path, None
    file, sep, name = text.rpartition(":")
    if sep and file and name.isidentifier():
        path = pathlib.Path(file)
        if path.is_file():
            return path, name
        text = file
    what = "is a folder, not a Python file" if pathlib.Path(text).is_dir() else "does not exist"
    raise click.BadParameter(f"{text} {what}", param_hint="FILE[:NAME]")


def load(path: pathlib.Path) -> types.ModuleType:
    """Import ``path`` as a module (see the module docstring)."""
    stem = path.stem
    name = stem if stem.isidentifier() and stem not in sys.modules else "__spangraph_file__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"{path} is not a Python file", param_hint="FILE[:NAME]")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves a component's forward references here
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise LoadError(f"{path} raised while it was imported:\n{_user_traceback(exc)}") from exc
    return module


def find(module: types.ModuleType, path: pathlib.Path, name: str | None) -> Target:
    """The target named ``name`` in the loaded file, or the default one."""
    if name is not None:
        return _named(module, path, name)
    if hasattr(module, "graph"):
        return _named(module, path, "graph")
    top = {n: v for n, v in vars(module).items() if not n.startswith("_")}
    graphs = [n for n, v in top.items() if isinstance(v, SpanGraph)]
    thunks = [n for n, v in top.items() if _thunks(v)]
    for found in (graphs, thunks):
        if len(found) == 1:
            return _named(module, path, found[0])
        if found:
            shown = ", ".join(found)
            raise click.UsageError(
                f"{path} defines several things to run ({shown}); name one: "
                f"spangraph run {path}:{found[0]}"
            )
    functions = [n for n, v in top.items() if _zero_arg_function(v, module)]
    hint = f" (its functions of no arguments: {', '.join(functions)})" if functions else ""
    raise click.UsageError(
        f"{path} has nothing to run by default: no name 'graph', no SpanGraph and no "
        f"generation at its top level; name what to run: spangraph run {path}:NAME{hint}"
    )


def _named(module: types.ModuleType, path: pathlib.Path, name: str) -> Target:
    if not hasattr(module, name):
        raise click.BadParameter(f"{path} defines no {name!r}", param_hint="FILE[:NAME]")
    value = getattr(module, name)
    if callable(value) and not isinstance(value, type) and not _is_runnable(value):
        value = _call(value, path, name)
    if isinstance(value, SpanGraph) or _is_span(value):
        return Target([value], [name])
    if isinstance(value, list | tuple) and value and all(_is_span(v) for v in value):
        return Target(list(value), [f"{name}[{i}]" for i in range(len(value))])
    raise click.BadParameter(
        f"{path}:{name} is {_describe(value)}; it must be {RUNNABLE}", param_hint="FILE[:NAME]"
    )


def _call(fn: Callable[..., Any], path: pathlib.Path, name: str) -> Any:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise click.BadParameter(
                f"{path}:{name} takes arguments ({', '.join(required)}); it must be {RUNNABLE}",
                param_hint="FILE[:NAME]",
            )
    try:
        return fn()
    except Exception as exc:
        raise LoadError(f"{path}:{name}() raised:\n{_user_traceback(exc)}") from exc


def _is_span(value: object) -> bool:
    if isinstance(value, CBlock | Component | ModelOutputThunk):
        return True
    return isinstance(value, ComponentLike) and not isinstance(value, type)


def _is_runnable(value: object) -> bool:
    return isinstance(value, SpanGraph) or _is_span(value)


def _thunks(value: object) -> bool:
    if isinstance(value, ModelOutputThunk):
        return True
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, ModelOutputThunk) for v in value)
    )


def _zero_arg_function(value: object, module: types.ModuleType) -> bool:
    if not inspect.isfunction(value) or value.__module__ != module.__name__:
        return False
    parameters = inspect.signature(value).parameters.values()
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters
    )


def _describe(value: object) -> str:
    if isinstance(value, types.ModuleType):
        return f"the module {value.__name__}"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, list | tuple) and not value:
        return f"an empty {type(value).__name__}"
    if isinstance(value, list | tuple):
        kinds = sorted({type(v).__name__ for v in value if not _is_span(v)})
        return f"a {type(value).__name__} holding {', '.join(kinds)}"
    return f"a {type(value).__name__}"


def _user_traceback(exc: BaseException) -> str:
    """The exception's traceback from the first frame outside spangraph (the user's
    code) down; just the exception for a syntax error."""
    here = pathlib.Path(__file__).resolve().parent.parent
    tb = exc.__traceback__
    while tb is not None and (
        pathlib.Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(here)
        or tb.tb_frame.f_code.co_filename.startswith("<frozen ")
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
