"""``@task``: a Python function as a graph node.

Arguments may be thunks (or any spans); the scheduler resolves thunks to
their parsed values before the call. A task may return new spans or thunks
(or lists, tuples and dicts holding them): the scheduler compiles and runs
them in the same run, and the task finishes when they have. A task's own
thunk can be a part of a component; it renders as its result's text.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from ..nodes import ModelOutputThunk, is_span
from ..nodes._digest import canonical_json

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, eq=False)
class TaskProducer:
    """The producer of a task node: a function and its arguments."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    thread: bool = False

    @property
    def kind(self) -> str:
        return "task"

    @property
    def label(self) -> str:
        return f"task({self.name})"

    @property
    def name(self) -> str:
        """The function's name: it is the node's label on spans, so it names code,
        never arguments (a ``functools.partial``'s repr would quote them)."""
        return _code_name(self.fn)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def inputs(self) -> Sequence[Any]:
        return [v for v in _walk_values((self.args, self.kwargs)) if is_span(v)]

    def params(self) -> str:
        fn = self.fn
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        plain = _replace_spans((self.args, dict(self.kwargs)))
        try:
            args = canonical_json(plain)
        except TypeError:
            # Arguments JSON cannot hold: their repr stands in. It may not be
            # stable across processes, which only costs cache hits, never
            # correctness (distinct arguments never share a node).
            args = repr(plain)
        return canonical_json({"task": name, "args": args})


def _code_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    if isinstance(fn, functools.partial):
        return f"partial({_code_name(fn.func)})"
    return type(fn).__qualname__  # a callable object: its class


def _walk_values(value: Any) -> list[Any]:
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if is_span(item):
            out.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
    return out


def _replace_spans(value: Any) -> Any:
    """The arguments with spans replaced by placeholders (spans are the node's inputs)."""
    if is_span(value):
        return {"$span": True}
    if isinstance(value, list | tuple):
        return [_replace_spans(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _replace_spans(v) for k, v in value.items()}
    return value


def resolve(value: Any) -> Any:
    """Replace thunks by their parsed values (inside lists, tuples and dicts too)."""
    if isinstance(value, ModelOutputThunk):
        return value.parsed
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(v) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


def spans_in(value: Any) -> list[Any]:
    """The spans a task returned, in order."""
    return _walk_values(value)


class Task:
    """A function that, called, declares a task node and returns its thunk."""

    def __init__(self, fn: Callable[..., Any], *, thread: bool = False) -> None:
        self.fn = fn
        self.thread = thread
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> ModelOutputThunk[Any]:
        return ModelOutputThunk(TaskProducer(self.fn, args, kwargs, self.thread))

    def __repr__(self) -> str:
        return f"<task {getattr(self.fn, '__qualname__', self.fn)}>"


def task(fn: Callable[..., Any] | None = None, *, thread: bool = False) -> Any:
    """Make ``fn`` (sync or async) a graph node: calling it declares the node.

    ``thread=True`` runs a sync function in a worker thread (for CPU-heavy or
    blocking work); otherwise sync functions run inline in the scheduler.
    """
    if fn is None:
        return lambda f: Task(f, thread=thread)
    return Task(fn, thread=thread)
