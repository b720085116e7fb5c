"""``@task``: a Python function as a graph node.

Arguments may be thunks (or any spans); the scheduler resolves thunks to
their parsed values before the call. A task may return any value holding
spans: one span, a list, tuple, set or dict of them, a pydantic model or a
dataclass with span fields, nested at any depth, or a one-shot iterator (a
generator, ``map``...) of them, which is materialised into a list once.
Every span in it is compiled into the running graph and runs in the same
run (its engine, limits, cache and tracing), and the task finishes when
they have. A task's own thunk can be a part of a component; it renders as
its result's text.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ..nodes import ExecutionState, ModelOutputThunk, render_span
from ..nodes._internal import canonical_json, current_state, is_span, value_hint

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, eq=False)
class TaskProducer:
    """The producer of a task node: a function and its arguments."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    thread: bool = False
    #: The state of the ``with`` blocks around the task's call (``None``: none): the
    #: generations its body declares are declared under it, as they would be there.
    state: ExecutionState | None = None
    #: The user's label for the node (``@task(label=)``): presentation only.
    given_label: str | None = None
    #: Where the function runs: ``"driver"`` (this process) or ``"cluster"`` (a worker
    #: of the run's executor). Not part of the node's id: the result is the same.
    where: str = "driver"

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

    def hint(self) -> str | None:
        """What tells this call apart from the task's other calls: its first scalar
        argument (content: shown only with capture on, see ``nodes._label``)."""
        for value in (*self.args, *self.kwargs.values()):
            hint = value_hint(value)
            if hint:
                return hint
        return None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def map_spans(self, fn: Callable[[Any], Any]) -> TaskProducer:
        """This producer with the spans in its arguments replaced by ``fn(span)``."""
        return dataclasses.replace(
            self, args=_map_spans(self.args, fn), kwargs=_map_spans(dict(self.kwargs), fn)
        )

    def inputs(self) -> Sequence[Any]:
        return [v for v in _walk_values((self.args, self.kwargs)) if is_span(v)]

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """The function called with the resolved arguments, under ``state``: what it
        returns (for an async function, an awaitable that awaits it under ``state``)."""
        state = self.state
        if state is None:
            return self.fn(*args, **kwargs)
        if self.is_async:
            return _awaited_in(state, self.fn(*args, **kwargs))
        with state:
            return self.fn(*args, **kwargs)

    def unstable_arguments(self) -> str | None:
        """Why this node's id may differ in another process: its arguments have no
        JSON form (``params`` then uses their repr); ``None`` when they have one."""
        if _json_arguments(_replace_spans((self.args, dict(self.kwargs)))) is not None:
            return None
        kinds = sorted({type(v).__name__ for v in (*self.args, *self.kwargs.values())})
        return f"{self.label} takes arguments that are not JSON data (of types {', '.join(kinds)})"

    def params(self) -> str:
        fn = self.fn
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        plain = _replace_spans((self.args, dict(self.kwargs)))
        args = _json_arguments(plain)
        if args is None:
            # Arguments with no JSON form: their repr stands in. It may not be
            # stable across processes, which costs cache hits (never correctness:
            # distinct arguments never share a node), and refuses interrupt().
            args = repr(plain)
        if self.state is None:
            return canonical_json({"task": name, "args": args})
        return canonical_json({"task": name, "args": args, "state": self.state.fingerprint()})


async def _awaited_in(state: ExecutionState, awaitable: Any) -> Any:
    with state:
        return await awaitable


def _code_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    if isinstance(fn, functools.partial):
        return f"partial({_code_name(fn.func)})"
    return type(fn).__qualname__  # a callable object: its class


# -- values holding spans ------------------------------------------------------------
#
# One rule says where spans may sit inside a task's arguments and inside what it
# returns: in lists, tuples, sets (and other sequences and sets), in the values of
# mappings, in the fields of pydantic models and dataclasses, at any depth. Other
# objects are leaves. ``_children`` and ``_rebuilt`` are that rule; the walk, the
# resolution to results and the parameters' placeholders all go through them.


def _children(value: Any) -> list[Any] | None:
    """The values inside ``value`` where spans may sit, or ``None`` for a leaf."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str | bytes | bytearray | memoryview):
        return None
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, BaseModel):
        return [getattr(value, name) for name in type(value).model_fields]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, Set | Sequence):
        return list(value)
    return None


def _rebuilt(value: Any, items: list[Any]) -> Any:
    """``value`` with its children (as ``_children`` lists them) replaced by ``items``."""
    if isinstance(value, list):
        return items
    if isinstance(value, tuple):
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, Mapping):
        return dict(zip(value.keys(), items, strict=True))
    if isinstance(value, BaseModel):
        return value.model_copy(update=dict(zip(type(value).model_fields, items, strict=True)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        return dataclasses.replace(value, **dict(zip(names, items, strict=True)))
    if isinstance(value, frozenset):
        return frozenset(items)
    if isinstance(value, Set):
        return set(items)
    return items


def _map_spans(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with every span in it replaced by ``fn(span)`` (containers rebuilt
    only where something in them changed)."""
    if is_span(value):
        return fn(value)
    items = _children(value)
    if items is None:
        return value
    mapped = [_map_spans(item, fn) for item in items]
    if all(new is old for new, old in zip(mapped, items, strict=True)):
        return value
    return _rebuilt(value, mapped)


def _walk_values(value: Any) -> list[Any]:
    """The spans in ``value``, in order (depth first)."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if is_span(item):
            out.append(item)
            continue
        items = _children(item)
        if items:
            stack.extend(reversed(items))
    return out


def _json_arguments(plain: Any) -> str | None:
    """A task's arguments (spans replaced) as canonical JSON: as they are, or with each
    value JSON cannot hold as its type's name and its JSON form through pydantic (a
    model, a dataclass, a date...: so two types never share a form); ``None`` when a
    value has no JSON form, or is a set (whose order, for strings, differs between
    processes)."""
    try:
        return canonical_json(plain)
    except TypeError:
        pass
    try:
        return canonical_json(_tagged(plain))
    except Exception:
        return None


_JSON_SCALARS = (str, int, float, bool, type(None))


def _tagged(value: Any) -> Any:
    """``value`` with every non-JSON value tagged with its type (see ``_json_arguments``)."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if type(value) is dict:
        return {str(k): _tagged(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_tagged(v) for v in value]
    if isinstance(value, Set):
        raise TypeError("a set has no stable order")
    kind = type(value)
    if isinstance(value, BaseModel):
        inner: Any = {name: _tagged(v) for name, v in value}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = {f.name: _tagged(getattr(value, f.name)) for f in dataclasses.fields(value)}
    else:
        inner = to_jsonable_python(value)  # raises for a value with no JSON form
        if isinstance(value, Mapping | Sequence):  # its items, checked the same way
            inner = _tagged(dict(value) if isinstance(value, Mapping) else list(value))
    return {"$type": f"{kind.__module__}.{kind.__qualname__}", "$value": inner}


def _replace_spans(value: Any) -> Any:
    """The arguments with spans replaced by placeholders (spans are the node's inputs)."""
    return _map_spans(value, _placeholder)


def _placeholder(span: Any) -> Any:
    return {"$span": True}


def resolve(value: Any) -> Any:
    """Replace thunks by their parsed values (wherever ``_children`` finds them)."""
    return _map_spans(value, _parsed)


def _parsed(span: Any) -> Any:
    return span.parsed if isinstance(span, ModelOutputThunk) else span


def materialise(value: Any) -> Any:
    """``value`` with every one-shot iterator in it (a generator, ``map``, ``zip``...)
    replaced by a list of what it yields, so that it can be walked more than once.
    (An async generator is collected by the scheduler before this.)"""
    if is_span(value):
        return value
    if _one_shot(value):
        return [materialise(item) for item in value]
    items = _children(value)
    if items is None:
        return value
    done = [materialise(item) for item in items]
    if all(new is old for new, old in zip(done, items, strict=True)):
        return value
    return _rebuilt(value, done)


def _one_shot(value: Any) -> bool:
    return isinstance(value, Iterator) and not isinstance(value, io.IOBase) and not is_span(value)


def spans_in(value: Any) -> list[Any]:
    """The spans a task returned, in order."""
    return _walk_values(value)


def task_text(result: Any) -> str:
    """How a task's result appears in a prompt: a span's rendered text, the lines of a
    sequence of spans, else the result (its thunks resolved) as text (a pydantic
    model as JSON)."""
    if is_span(result):
        return render_span(result).text
    if isinstance(result, list | tuple) and result and all(is_span(r) for r in result):
        return "\n".join(render_span(r).text for r in result)
    resolved = resolve(result)
    if isinstance(resolved, BaseModel):
        try:
            return resolved.model_dump_json()
        except ValueError:
            return str(resolved)
    return str(resolved)


class Task:
    """A function that, called, declares a task node and returns its thunk."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        thread: bool = False,
        label: str | None = None,
        where: str = "driver",
    ) -> None:
        self.fn = fn
        self.thread = thread
        self.label = label
        self.where = where
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> ModelOutputThunk[Any]:
        return ModelOutputThunk(
            TaskProducer(
                self.fn,
                args,
                kwargs,
                thread=self.thread,
                state=current_state(),
                given_label=self.label,
                where=self.where,
            )
        )

    def __repr__(self) -> str:
        return f"<task {getattr(self.fn, '__qualname__', self.fn)}>"


def task(
    fn: Callable[..., Any] | None = None,
    *,
    thread: bool = False,
    label: str | None = None,
    where: str = "driver",
) -> Any:
    """Make ``fn`` (sync or async) a graph node: calling it declares the node.

    ``thread=True`` runs a sync function in a worker thread (for CPU-heavy or
    blocking work); otherwise sync functions run inline in the scheduler.
    ``label`` names every node of this task in drawings, the LogDAG and spans,
    whatever the capture mode; without it the label is ``task(<function>)``,
    plus, with content capture on only, the call's first scalar argument.
    ``where="cluster"`` runs the function on a worker of the run's executor
    (``run(executor=DaskExecutor(...))``): its module must be importable on the
    workers, its arguments and result are sent by pickle, and it may not return
    spans (declare generations in a task on the driver).
    """
    if label is not None and not isinstance(label, str):
        raise TypeError(f"task(label=...) takes a str, got {type(label).__name__}")
    if where not in ("driver", "cluster"):
        raise ValueError(f"task(where=...) is 'driver' or 'cluster', got {where!r}")
    if fn is None:
        return lambda f: Task(f, thread=thread, label=label or None, where=where)
    return Task(fn, thread=thread, label=label or None, where=where)
