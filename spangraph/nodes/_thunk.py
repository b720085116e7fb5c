"""``ModelOutputThunk``: the lazy, awaitable result of one generation (or task)."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NamedTuple,
    Protocol,
    TypeVar,
    runtime_checkable,
)

import anyio
import anyio.lowlevel
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._errors import ThunkNotDoneError

if TYPE_CHECKING:
    from ._component import Span
    from ._standard import Requirement

T = TypeVar("T")

_NOT_HELD = (
    "thunk is pending and no run holds it; awaiting or streaming a thunk never starts a "
    "run: run it with spangraph.run(thunk) or await spangraph.arun(thunk), or start arun() "
    "(as a task, say) before awaiting or streaming it"
)
_RELEASED = (
    "the run that held this thunk ended without running it (the run failed or was "
    "cancelled first); run it again with spangraph.run()"
)


class ThunkState(enum.Enum):
    """Where a thunk's generation is: pending, running, then done, failed, cancelled
    or skipped (``finished``: one of these last four)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self not in (ThunkState.PENDING, ThunkState.RUNNING)


class Usage(NamedTuple):
    """Token counts. ``input_tokens`` includes ``cached_input_tokens`` (the
    prompt tokens read from a KV prefix instead of being prefilled). Two
    ``Usage`` values add up field by field.
    """

    # ``Usage``, ``Timings`` and ``Completion`` are named tuples: immutable
    # values, one of each made per generation, and a tuple is the cheapest
    # such record to build (``docs/design/protocol.md``).

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:  # type: ignore[override]
        """Token counts summed field by field (not tuple concatenation)."""
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
        )


class Timings(NamedTuple):
    """Milliseconds: waiting for a slot, prompt evaluation, token generation, all of it;
    and, for a streamed generation, from the engine call to its first text."""

    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    first_token_ms: float | None = None


# Shared zero values (they are immutable), so a new thunk builds neither.
_NO_USAGE = Usage()
_NO_TIMINGS = Timings()


@runtime_checkable
class Producer(Protocol):
    """What a thunk needs to know about the node that produces it.

    ``kind`` is the graph node kind (``"generation"``, ``"task"``, ...),
    ``inputs()`` the spans it consumes (its parts in the graph), and
    ``params()`` a canonical JSON string of everything else that changes its
    result (execution state, options, sample index).
    """

    @property
    def kind(self) -> str: ...

    @property
    def label(self) -> str: ...

    def inputs(self) -> Sequence[Span]: ...

    def params(self) -> str: ...


@runtime_checkable
class StateLike(Protocol):
    """The part of an execution state that spans see (defined in ``spangraph.engines``)."""

    def fingerprint(self) -> str: ...

    def prefix_spans(self) -> Sequence[Span]: ...


class Verdict(Protocol):
    """A requirement's verdict on an output (``spangraph.sampling.ValidationResult``)."""

    @property
    def passed(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def score(self) -> float | None: ...


class ThunkFacts:
    """What spangraph records about how a thunk was made: typed fields, each
    written by one part of the framework (``thunk.facts``; ``thunk.meta`` is the
    user's own). A field nobody wrote keeps its default.
    """

    __slots__ = (
        "attempts",
        "logged_states",
        "memo",
        "memo_usage",
        "options",
        "result",
        "sample_index",
        "score",
        "selected",
        "stopped_text",
        "stream",
        "validation",
        "validation_passed",
        "votes",
    )

    def __init__(self) -> None:
        # -- a generation (the generate protocol) --
        #: What the output memo answered: ``"hit"``, ``"miss"``, or ``None`` (not looked up).
        self.memo: Literal["hit", "miss"] | None = None
        #: On a memo hit, the tokens the memoised generation spent (the hit spends none).
        self.memo_usage: Usage | None = None
        #: The states that keep this generation's logs (``ExecutionState.logs()``).
        self.logged_states: tuple[Any, ...] = ()
        #: Someone asked for the generation's deltas (``thunk.stream()``): the engine
        #: streams it, if it can.
        self.stream = False
        # -- a task (the scheduler) --
        #: What the task returned, as it returned it (its spans run before it is done).
        self.result: Any = None
        # -- a sampler node (the scheduler) --
        #: Every attempt the sampler made, in order.
        self.attempts: list[ModelOutputThunk[Any]] = []
        #: The attempt whose result the node's thunk took.
        self.selected: ModelOutputThunk[Any] | None = None
        # -- a sampler's attempt (the sampler) --
        #: The attempt's sample index (part of its memo key).
        self.sample_index = 0
        #: Each requirement with its verdict on the attempt (``None``: not validated).
        self.validation: list[tuple[Requirement, Verdict]] | None = None
        #: Whether every requirement passed (``None``: not validated).
        self.validation_passed: bool | None = None
        #: The text generated before a requirement's streaming check stopped the
        #: attempt (``None``: not stopped).
        self.stopped_text: str | None = None
        #: ``BestOfN``'s score of the attempt.
        self.score: float | None = None
        #: ``MajorityVote``: how many attempts gave the same (normalised) answer.
        self.votes: int | None = None
        #: ``HyperParamSweep``: the options of the attempt's grid point.
        self.options: dict[str, Any] | None = None


class ModelOutputThunk(Generic[T]):
    """The future output of one generation.

    States: pending → running → done | failed | cancelled | skipped. ``await
    thunk`` gives the text; ``.value`` the text once done (a clear error
    before); ``.parsed`` the typed result; ``.usage``, ``.timings``,
    ``.cache_hit`` and ``.error`` describe how it was made. ``producer`` links
    back to the action and execution state it was declared with.

    A thunk is not a ``CBlock``: it is a placeholder for text that does not
    exist yet, and ``match`` statements can tell the two apart.
    """

    __slots__ = (
        "__weakref__",
        "_claimed",
        "_deltas",
        "_done_event",
        "_facts",
        "_id",
        "_meta",
        "_parsed",
        "_stream_event",
        "_value",
        "cache_hit",
        "error",
        "producer",
        "skip_reason",
        "state",
        "timings",
        "usage",
    )

    def __init__(self, producer: Producer | None = None) -> None:
        self.producer = producer
        self.state = ThunkState.PENDING
        self._value: str | None = None
        self._parsed: Any = None
        self.usage = _NO_USAGE
        self.timings = _NO_TIMINGS
        self.cache_hit = False
        self.error: BaseException | None = None
        self.skip_reason: str | None = None
        self._meta: dict[str, Any] | None = None
        self._facts: ThunkFacts | None = None
        # Streamed text, in the order it came; the shared empty tuple until the first
        # delta (most thunks never stream, and a graph holds one thunk per generation).
        self._deltas: list[str] | tuple[()] = ()
        self._claimed = False
        self._id: str | None = None
        self._done_event: anyio.Event | None = None
        self._stream_event: anyio.Event | None = None

    # -- reading -------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        """The user's own notes on the thunk: spangraph never reads or writes it (what
        spangraph records is in ``facts``). Made on first use."""
        meta = self._meta
        if meta is None:
            meta = self._meta = {}
        return meta

    @property
    def facts(self) -> ThunkFacts:
        """What spangraph recorded about how the thunk was made (memo outcome, a
        sampler's attempts, an attempt's validation...): see ``ThunkFacts``. Made on
        first use; the framework reads ``_facts`` (``None`` for most thunks)."""
        facts = self._facts
        if facts is None:
            facts = self._facts = ThunkFacts()
        return facts

    @property
    def id(self) -> str:
        """The content id of the node that produces this thunk."""
        from ._span import span_id

        return span_id(self)

    @property
    def action(self) -> Span | None:
        """The action this thunk generates from (``None`` for task results)."""
        return getattr(self.producer, "action", None)

    @property
    def attempts(self) -> list[ModelOutputThunk[Any]]:
        """For a sampler's thunk: every attempt, each with its ``facts.validation``."""
        return self._facts.attempts if self._facts is not None else []

    @property
    def tool_calls(self) -> list[Any]:
        """For the thunk of ``generate(..., tools=[...])``: each round of tool calls
        (``ToolRound``: its index, and each call's ``ToolOutcome``), as far as the run
        got; an empty list for any other thunk."""
        rounds = getattr(self.producer, "tool_rounds", None)
        return list(rounds(self)) if callable(rounds) else []

    @property
    def done(self) -> bool:
        return self.state is ThunkState.DONE

    @property
    def value(self) -> str:
        """The generated text. Raises ``ThunkNotDoneError`` unless the thunk is done."""
        if self.state is not ThunkState.DONE:
            raise ThunkNotDoneError(self._not_done_reason(), path=self._label())
        assert self._value is not None
        return self._value

    @property
    def parsed(self) -> T:
        """The output parsed into the action's output type."""
        if self.state is not ThunkState.DONE:
            raise ThunkNotDoneError(self._not_done_reason(), path=self._label())
        parsed: T = self._parsed
        return parsed

    def _label(self) -> str:
        return self.producer.label if self.producer is not None else "ModelOutputThunk"

    def _not_done_reason(self) -> str:
        match self.state:
            case ThunkState.PENDING:
                return "thunk is pending: it has not run yet (run it with spangraph.run())"
            case ThunkState.RUNNING:
                return "thunk is still running: await it or wait for run() to return"
            case ThunkState.FAILED:
                return f"generation failed: {self.error!r}"
            case ThunkState.CANCELLED:
                return "generation was cancelled"
            case _:
                return f"generation was skipped: {self.skip_reason}"

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> str:
        """Wait for the run that holds this thunk; never start one (see ``stream``)."""
        await self._check_held()
        while not self.state.finished:
            if not self._claimed:
                raise ThunkNotDoneError(_RELEASED, path=self._label())
            if self._done_event is None:
                self._done_event = anyio.Event()
            await self._done_event.wait()
        if self.state is ThunkState.FAILED and self.error is not None:
            raise self.error
        return self.value

    async def stream(self) -> AsyncIterator[str]:
        """Yield the text as it is generated; the deltas concatenate to ``.value``.

        Works whether the thunk is still running (deltas arrive as the engine
        streams them) or already done (the recorded deltas, or the whole text
        when the engine did not stream). Like ``await thunk``, it waits for the
        run that holds the thunk and never starts one: a thunk no run holds
        raises ``ThunkNotDoneError`` (run it with ``spangraph.run()`` or start
        ``arun()`` first, e.g. as a task, then stream). Asked before the
        generation has started, the engine streams it (if it can).
        """
        self.facts.stream = True  # ask the engine to stream, if it has not started yet
        await self._check_held()
        async for delta in self._follow():
            yield delta

    async def _check_held(self) -> None:
        """A pending thunk that no run holds gets one turn of the event loop, in which
        a run started just before (``arun()`` made a task, say) takes it on; if none
        does, it is an error: awaiting or streaming a thunk never starts a run."""
        if self.state is ThunkState.PENDING and not self._claimed:
            await anyio.lowlevel.checkpoint()
            if self.state is ThunkState.PENDING and not self._claimed:
                raise ThunkNotDoneError(_NOT_HELD, path=self._label())

    async def _follow(self) -> AsyncIterator[str]:
        index = 0
        deltas = self._deltas
        while True:
            if self._deltas is not deltas:
                # A new attempt (a retry) streams afresh: its deltas start again.
                deltas, index = self._deltas, 0
            while index < len(deltas):
                index += 1
                yield deltas[index - 1]
            if self.state.finished:
                break
            if self.state is ThunkState.PENDING and not self._claimed:
                raise ThunkNotDoneError(_RELEASED, path=self._label())
            if self._stream_event is None:
                self._stream_event = anyio.Event()
            await self._stream_event.wait()
        if self.state is ThunkState.DONE and index == 0 and self._value:
            yield self._value
        elif self.state is ThunkState.FAILED and self.error is not None:
            raise self.error

    def __repr__(self) -> str:
        return f"<ModelOutputThunk {self._label()} {self.state.value}>"

    def __bool__(self) -> bool:
        return True

    # -- writing (engines and the scheduler) -----------------------------------------

    # A thunk never moves out of a final state (done, failed, cancelled, skipped) by
    # these writers: a result that arrives late (after the run has given up on the
    # thunk) is dropped. ``_reset`` is the one way back to pending: a new run of the
    # node, or a retry of a failed attempt.

    def _set_running(self) -> None:
        self.state = ThunkState.RUNNING

    def _push_delta(self, text: str) -> None:
        if text:
            if self._deltas:
                self._deltas.append(text)
            else:
                self._deltas = [text]
            self._wake_stream()

    def _set_done(
        self,
        value: str,
        parsed: Any,
        usage: Usage | None = None,
        timings: Timings | None = None,
        cache_hit: bool = False,
    ) -> None:
        state = self.state
        if state is not _RUNNING and state is not _PENDING:
            return  # final already (see above)
        self._value = value
        self._parsed = parsed
        if usage is not None:
            self.usage = usage
        if timings is not None:
            self.timings = timings
        self.cache_hit = cache_hit
        self.state = ThunkState.DONE
        if self._done_event is not None or self._stream_event is not None:
            self._finish()

    def _set_failed(self, error: BaseException, *, raw: str | None = None) -> None:
        if self.state.finished:
            return
        self.error = error
        if raw is not None:
            self._value = raw
        self.state = ThunkState.FAILED
        self._finish()

    def _set_cancelled(self) -> None:
        if self.state.finished:
            return
        self.state = ThunkState.CANCELLED
        self._finish()

    def _set_skipped(self, reason: str) -> None:
        if self.state.finished:
            return
        self.skip_reason = reason
        self.state = ThunkState.SKIPPED
        self._finish()

    def _copy_result(self, other: ModelOutputThunk[Any]) -> None:
        """Give this thunk the outcome of ``other`` (an equal node already computed)."""
        if self.state.finished:
            return
        self._deltas = list(other._deltas) if other._deltas else ()
        self.usage, self.timings, self.cache_hit = other.usage, other.timings, other.cache_hit
        self.error, self.skip_reason = other.error, other.skip_reason
        self._value, self._parsed = other._value, other._parsed
        self.state = other.state
        self._finish()

    def _reset(self) -> None:
        """Back to pending, for a node that is run again."""
        self.state = ThunkState.PENDING
        self._value = self._parsed = self.error = self.skip_reason = None
        self._deltas = ()
        self.usage, self.timings, self.cache_hit = _NO_USAGE, _NO_TIMINGS, False

    def _release(self) -> None:
        """The run that held this thunk lets go of it unfinished: waiters wake (and raise)."""
        self._claimed = False
        self._finish()

    def _finish(self) -> None:
        if self._done_event is not None:
            self._done_event.set()
            self._done_event = None
        self._wake_stream()

    def _wake_stream(self) -> None:
        if self._stream_event is not None:
            self._stream_event.set()
            self._stream_event = None

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


_PENDING = ThunkState.PENDING
_RUNNING = ThunkState.RUNNING


class EngineLike(Protocol):
    """What a generation's producer needs of the engine it is pinned to
    (``spangraph.engines.InferenceEngine``): what identifies its outputs."""

    def fingerprint(self) -> dict[str, Any]: ...


class MemoPolicy(Protocol):
    """What the output memo needs of a generation's cache policy
    (``spangraph.cache.CachePolicy``)."""

    @property
    def ttl(self) -> float | None: ...

    def applies(self, options: Mapping[str, Any]) -> bool: ...


#: The options of a generation declared without any (one shared, read-only mapping).
NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GenerationProducer:
    """The producer of a generation: an action, the state and options it was declared with."""

    action: Span
    state: StateLike | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: NO_OPTIONS)
    sample_index: int = 0
    #: The engine to run on (``None``: the run's engine).
    engine: EngineLike | None = None
    #: This generation's ``CachePolicy`` (``None``: the state's, then the run's).
    #: Not part of the node's identity: it changes where the result comes from, not what it is.
    cache: MemoPolicy | None = None
    #: The user's label for the node (``generate(label=)``): presentation only, not part
    #: of its identity (equal declarations share one node, and the first one's label).
    given_label: str | None = None

    @property
    def kind(self) -> str:
        return "generation"

    @property
    def label(self) -> str:
        """The structural label (span paths, errors): ``generate(<action class>)``."""
        return f"generate({type(self.action).__name__})"

    def hint(self) -> str | None:
        """What tells this node apart from its siblings (content: see ``_label``)."""
        from ._label import action_hint

        return action_hint(self.action)

    def inputs(self) -> Sequence[Span]:
        prefix = self.state.prefix_spans() if self.state is not None else ()
        return (*prefix, self.action)

    def map_spans(self, fn: Callable[[Any], Any]) -> GenerationProducer:
        """This producer with the spans it holds (action, state) replaced by ``fn(x)``."""
        return replace(self, action=fn(self.action), state=fn(self.state))

    def params(self) -> str:
        from ._digest import canonical_json

        if self.state is None and not self.options and not self.sample_index and not self.engine:
            return _PLAIN_GENERATION  # the common case, without a JSON encoding per node
        params: dict[str, Any] = {
            "state": self.state.fingerprint() if self.state is not None else "",
            "options": dict(self.options),
            "sample": self.sample_index,
        }
        if self.engine is not None:
            params["engine"] = self.engine.fingerprint()
        return canonical_json(params, what="generation options")


_PLAIN_GENERATION = '{"options":{},"sample":0,"state":""}'
