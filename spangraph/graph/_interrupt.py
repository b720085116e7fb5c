"""``interrupt()``: a task that pauses for a person's answer, and the resume that gives it.

How it works
------------
A task calls ``interrupt(question, schema)``. While the scheduler runs a task's
body it sets ``_current`` to the node's ``TaskCall`` (its node id, span path,
label, the answers the run was given, and how many interrupts the body has
asked so far). An interrupt's id is a digest of the node id (a content digest:
stable across processes for the same program), the interrupt's index in the
body, and the question, so the same question asked again on a resume has the
same id.

- An answer is known (given to ``run(resume=...)``, or stored with the memo
  store by an earlier resume): ``interrupt()`` returns it, validated against
  ``schema`` (pydantic: a model comes back as a model).
- Otherwise it raises ``InterruptSignal``, a ``BaseException`` (so that a
  task's own ``except Exception`` does not swallow it). The scheduler marks the
  node interrupted, leaves everything downstream pending, and finishes every
  branch that does not depend on it; the run returns ``status="interrupted"``.

A resume runs the same roots again: nodes done in this process are reused,
generations are served from the output memo, and the interrupted task's body
runs again from its start (so side effects belong after ``interrupt()`` or in
a task of their own).

What a resume needs (each interrupt's question, path, schema, and the answers
given) is written to the run's memo store, when it has one (``run(cache=...)``),
under keys of their own (``spangraph.interrupt:<id>``, ``spangraph.answer:<id>``),
so another process can resume; in one process a registry of the interrupts
seen is enough. That registry keeps the latest ``SEEN_LIMIT`` interrupts (a
long-running process asks without end); an older one is still found in the
run's memo store.

An id is only as stable as the task's node id. A task whose arguments have no
JSON form (JSON data, or pydantic's form of a model, a dataclass, a date... with
its type's name) gets a node id from their repr, which may differ in another
process (an object's address, a set's order), and so may every node downstream:
``interrupt()`` in such a task, or in one that reads such a task's result, is
refused with an ``InterruptError`` naming the task, whose answer could never be
matched to its question by another process.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from ..cache import Store

_INTERRUPT_KEY = "spangraph.interrupt:"
_ANSWER_KEY = "spangraph.answer:"


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A question a task asked with ``interrupt()``, waiting for its answer.

    ``id`` is what ``run(resume={id: answer})`` and ``Run.resume`` take; it is
    the same in every process that runs the same program. ``question`` is the
    task's question, ``path`` and ``label`` the task node's span path and label,
    ``schema`` the JSON schema an answer must validate against.
    """

    id: str
    question: str
    path: str
    label: str
    schema: Mapping[str, Any]
    node_id: str = ""
    #: The interrupted run's span (hex trace and span ids; empty when untraced): the
    #: span of a run that resumes it links to it.
    trace_id: str = ""
    span_id: str = ""

    def record(self) -> dict[str, Any]:
        """The interrupt as JSON (what the memo store keeps)."""
        return {
            "id": self.id,
            "question": self.question,
            "path": self.path,
            "label": self.label,
            "schema": dict(self.schema),
            "node_id": self.node_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> Interrupt:
        return cls(
            id=str(value["id"]),
            question=str(value["question"]),
            path=str(value["path"]),
            label=str(value["label"]),
            schema=dict(value["schema"]),
            node_id=str(value.get("node_id", "")),
            trace_id=str(value.get("trace_id", "")),
            span_id=str(value.get("span_id", "")),
        )


class InterruptError(Exception):
    """An ``interrupt()`` or a resume that cannot go on.

    Raised before a resumed run starts (nothing has run) when an answer does not
    validate against its interrupt's schema or names an interrupt nobody asked;
    and by ``interrupt()`` called outside a task of a run. ``path`` is the span
    path of the task that asked (empty when unknown), ``interrupt_id`` the id.
    """

    def __init__(self, message: str, *, path: str = "", interrupt_id: str = "") -> None:
        self.path = path
        self.interrupt_id = interrupt_id
        super().__init__(f"{path}: {message}" if path else message)


class InterruptSignal(BaseException):
    """What ``interrupt()`` raises to pause its task: the scheduler's to catch. A
    ``BaseException``, so that a task's ``except Exception`` lets it through."""

    def __init__(self, interrupt: Interrupt) -> None:
        self.interrupt = interrupt
        super().__init__(interrupt.id)


@dataclass(slots=True)
class Answers:
    """The answers a run was given (already validated), and its store (for answers
    an earlier resume stored, and to store the run's interrupts)."""

    given: Mapping[str, Any] = field(default_factory=dict)
    store: Store | None = None

    def get(self, interrupt_id: str) -> tuple[bool, Any]:
        if interrupt_id in self.given:
            return True, self.given[interrupt_id]
        if self.store is not None:
            try:
                stored = self.store.get(_ANSWER_KEY + interrupt_id)
            except Exception:
                stored = None  # a store that cannot read: the answer is not known
            if stored is not None and "answer" in stored:
                return True, stored["answer"]
        return False, None


@dataclass(slots=True)
class TaskCall:
    """The task node whose body is running (``_current``): what ``interrupt()`` needs."""

    node_id: str
    #: The node's span path, made only when the body interrupts: a path is a walk up
    #: to a root, so a run of many tasks would otherwise pay for one per task, and a
    #: deep graph's walks add up to its depth squared.
    path: Callable[[], str]
    label: str
    answers: Answers
    asked: int = 0
    #: Why the node's id may differ in another process (``None``: it is stable);
    #: called only when the body interrupts.
    unstable: Callable[[], str | None] | None = None


_current: ContextVar[TaskCall | None] = ContextVar("spangraph_task_call", default=None)

#: How many interrupts this process keeps in ``_seen`` (the latest ones).
SEEN_LIMIT = 4096
#: The interrupts this process has seen, by id, oldest first (``run(resume=...)``
#: checks answers against them when the run's store does not hold them).
_seen: OrderedDict[str, Interrupt] = OrderedDict()
_seen_lock = threading.Lock()


def interrupt(question: str, schema: Any = None) -> Any:
    """Pause the running task until a person answers ``question``; return the answer.

    Call it inside a ``@task`` (sync or async) of a run. The first time, the
    task stops here: the run finishes every branch that does not depend on it
    and returns with ``Run.status == "interrupted"`` and the question in
    ``Run.interrupts``. Resumed with an answer (``Run.resume({id: answer})`` or
    ``run(*roots, resume={id: answer})``), the task's body runs again from its
    start and this call returns the answer, validated against ``schema``: any
    type pydantic validates (``str``, ``int``, ``bool``, a ``Literal``, a
    pydantic model, ``list[...]``...); ``None`` means ``str``.
    """
    call = _current.get()
    if call is None:
        raise InterruptError("interrupt() is called inside a @task while a run runs it")
    if not isinstance(question, str):
        raise TypeError(f"interrupt() takes the question as a str, got {type(question).__name__}")
    adapter = _adapter(schema)
    path = call.path()
    reason = call.unstable() if call.unstable is not None else None
    if reason is not None:
        raise InterruptError(
            f"interrupt() cannot be asked here: {reason}, so this task's node id (and "
            f"the interrupt's id, made from it) comes from a repr that may differ in "
            f"another process, where the answer could not be matched to the question. "
            f"Give the task arguments with a JSON form (str, numbers, lists, dicts, "
            f"pydantic models, dataclasses; no sets), e.g. an object's key instead of "
            f"the object",
            path=path,
        )
    index = call.asked
    call.asked += 1
    interrupt_id = _interrupt_id(call.node_id, index, question)
    known, answer = call.answers.get(interrupt_id)
    if known:
        return _validated(adapter, answer, path=path, interrupt_id=interrupt_id)
    raise InterruptSignal(
        Interrupt(
            id=interrupt_id,
            question=question,
            path=path,
            label=call.label,
            schema=adapter.json_schema(),
            node_id=call.node_id,
        )
    )


def _adapter(schema: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(str if schema is None else schema)
    except Exception as exc:
        raise TypeError(
            f"interrupt(schema=...) takes a type pydantic can validate, got {schema!r}: {exc}"
        ) from exc


def _interrupt_id(node_id: str, index: int, question: str) -> str:
    digest = hashlib.blake2b(f"{node_id}\0{index}\0{question}".encode(), digest_size=10)
    return "int-" + digest.hexdigest()


def _validated(adapter: TypeAdapter[Any], answer: Any, *, path: str, interrupt_id: str) -> Any:
    try:
        return adapter.validate_python(answer)
    except ValidationError as exc:
        raise InterruptError(
            f"the answer to interrupt {interrupt_id} does not validate: {exc}",
            path=path,
            interrupt_id=interrupt_id,
        ) from exc


def remember(interrupts: Iterable[Interrupt], store: Store | None) -> None:
    """Keep a run's interrupts: in this process, and in its memo store (if any), so
    that ``run(resume=...)`` can check answers, here or in another process. A store
    that cannot write costs only that other process's check."""
    with _seen_lock:
        for item in interrupts:
            _seen[item.id] = item
            _seen.move_to_end(item.id)
        while len(_seen) > SEEN_LIMIT:
            _seen.popitem(last=False)
    if store is not None:
        for item in interrupts:
            try:
                store.put(_INTERRUPT_KEY + item.id, item.record())
            except Exception:
                continue


def checked_answers(
    answers: Mapping[str, Any], store: Store | None
) -> tuple[dict[str, Any], list[Interrupt]]:
    """The answers for a resumed run, each checked against its interrupt's schema
    before anything runs: an ``InterruptError`` naming the task's span path for an
    answer that does not validate, or an id no run has asked. Stored with the
    run's store (if any), so that a later resume in another process has them too."""
    if not isinstance(answers, Mapping):
        raise TypeError(f"resume= takes a dict of answers by interrupt id, got {answers!r}")
    checked: dict[str, Any] = {}
    answered: list[Interrupt] = []
    for interrupt_id, given in answers.items():
        asked = _lookup(interrupt_id, store)
        if asked is None:
            raise InterruptError(
                f"resume= answers interrupt {interrupt_id!r}, which no run of this process "
                f"or of the run's memo store asked (pass cache= the store the interrupted "
                f"run used, or use Run.resume)",
                interrupt_id=interrupt_id,
            )
        try:
            answer = to_jsonable_python(given)  # a pydantic model as its JSON, say
        except Exception as exc:
            raise InterruptError(
                f"the answer to interrupt {interrupt_id} is not JSON data: {exc}",
                path=asked.path,
                interrupt_id=interrupt_id,
            ) from None
        try:
            jsonschema.validate(answer, dict(asked.schema))
        except jsonschema.ValidationError as exc:
            raise InterruptError(
                f"the answer to {asked.question!r} (interrupt {interrupt_id}) does not "
                f"validate against its schema: {exc.message}",
                path=asked.path,
                interrupt_id=interrupt_id,
            ) from None
        checked[interrupt_id] = answer
        answered.append(asked)
    if store is not None:
        for interrupt_id, answer in checked.items():
            try:
                store.put(_ANSWER_KEY + interrupt_id, {"answer": answer})
            except Exception:
                continue
    return checked, answered


def _lookup(interrupt_id: str, store: Store | None) -> Interrupt | None:
    with _seen_lock:
        seen = _seen.get(interrupt_id)
    if seen is not None:
        return seen
    if store is None:
        return None
    try:
        value = store.get(_INTERRUPT_KEY + interrupt_id)
        return Interrupt.from_record(value) if value is not None else None
    except Exception:
        return None
