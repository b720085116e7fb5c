"""``InferenceEngine``: the fixed generate protocol.

The steps
---------
``generate()`` is final. Every generation runs these eight steps, in this
order (``InferenceEngine._protocol``, which reads as the list below). Each
is a method an engine may refine, never reorder:

====  =========================  =====  =======================  ===========================
step  method                     kind   the base step is         refining it costs, per
                                        skipped when             generation
====  =========================  =====  =======================  ===========================
1     handle_model_options       sync   no state, no call        a call
                                        options (the defaults)
2     render                     sync   never                    nothing more
3     handle_output_cache        async  no memo applies          a coroutine; and on an
                                                                 engine that does not
                                                                 complete inline, a task
                                                                 from step 3 on (no memo
                                                                 hit finishes inline)
4     handle_input_cache         async  always (it does          a coroutine, on a miss
                                        nothing)
5     _complete / _stream        async  (the primitive: an engine must implement _complete)
6     parse                      sync   plain-text output        a call
                                        (the text as it is)
7     store,                     async  no memo applies          two coroutines, on a miss
      handle_cache_eviction
8     telemetry                  sync   no state, nobody         a call
                                        takes the records
====  =========================  =====  =======================  ===========================

1. ``handle_model_options`` — engine defaults < execution state < call.
2. ``render`` — the action (after the state's prefix spans) → ``Request``.
   Then the protocol decides which output memo applies (``request.memo``:
   store, policy, key; see ``engines/_memo.py``).
3. ``handle_output_cache`` — look the request up in that memo; a hit skips 4, 5 and 7.
4. ``handle_input_cache`` — KV reuse for ``cache=True`` prefixes (``request.prefix``).
5. ``_complete`` / ``_stream`` — the primitive (``_stream`` when someone
   streams the thunk and the engine can).
6. ``parse`` — the action's ``parse_output``; a failure keeps the raw text.
7. ``store`` + ``handle_cache_eviction`` — write the memo, keep its budgets.
   The memo never fails or loses a generation (``engines/_memo.py``).
8. ``telemetry`` — one ``GenerationRecord`` event, success or failure.

Like httpx's transports, an engine is a primitive plus its capabilities;
option merging, caching, parsing and telemetry are the same for all.

How the steps run
-----------------
The protocol is one coroutine. ``generate()`` awaits it. The scheduler
instead starts it inline (``_start``): its ``InlineDriver``
(``engines/_handoff.py``) runs the coroutine by hand until it would wait,
so a generation that never waits (a memo hit, an instant engine) costs no
task; what would wait is handed to a task with the rest of the coroutine.
Inline, the engine's own asynchronous code (a refined step 3, steps 4 and
5) runs only when the engine ``completes_inline``: else the protocol asks
to go on in a task first (``to_task``), since that code may enter a cancel
scope. That is the one mechanism for speed in the protocol; the other
optimisation is that an inherited step that would do nothing is not
called (the table above, ``_Refined``). Both have a reference path and a
test that they agree: ``docs/design/protocol.md``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from time import perf_counter
from typing import Any, ClassVar, TypeVar

import anyio

from .. import events
from ..cache import Store
from ..nodes import (
    CBlock,
    ExecutionState,
    ModelOutputThunk,
    ParseError,
    Prompt,
    Segment,
    ThunkState,
    Timings,
    render_span,
)
from ..nodes._internal import (
    FAST_RENDERS,
    TEXT_OUTPUT,
    GenerationProducer,
    as_span,
    compose,
    current_state,
    span_label,
)
from . import _memo
from ._handoff import InlineDriver, to_task
from ._memo import AWAIT_ENTRY
from ._options import check_options, merge
from ._states import Identity
from ._types import TOOL_STEPS, Capabilities, Completion, Request, ToolRequest, WorkerRun

#: How often ``InferenceEngine.wait_prefix_ready`` asks whether a prefix is warm: a
#: prefill takes seconds, so 10 ms late costs under 1% of it.
PREFIX_POLL_SECONDS = 0.01

T = TypeVar("T")
_IDENTITY = Identity()
_RUNNING = ThunkState.RUNNING
_current_bus = events._bus.get
_new = tuple.__new__


class _Refined:
    """Which protocol steps an engine class refines (a refined step is always called;
    an inherited one is skipped where it would do nothing), and so where an inline
    start must go on in a task: decided once per class."""

    __slots__ = (
        "call_in_task",
        "input_cache",
        "model_options",
        "output_cache",
        "output_cache_in_task",
        "parse",
        "store",
        "telemetry",
    )

    def __init__(self, cls: type[InferenceEngine]) -> None:
        def refines(name: str) -> bool:
            return getattr(cls, name) is not getattr(InferenceEngine, name)

        #: Steps 1, 6 and 8 are refined: each is called even where the base step would
        #: do nothing (no state or call options; a plain-text action; nobody listening).
        self.model_options = refines("handle_model_options")
        self.parse = refines("parse")
        self.telemetry = refines("telemetry")
        #: Step 3 is refined: it is awaited even when no memo applies.
        self.output_cache = refines("handle_output_cache")
        #: Step 4 is refined: it is awaited (the base step does nothing).
        self.input_cache = refines("handle_input_cache")
        #: Step 7 is refined: it is awaited even when no memo applies.
        self.store = refines("store") or refines("handle_cache_eviction")
        #: Started inline, the protocol goes on in a task before step 3 (a refined
        #: one of an engine that does not complete inline) ...
        self.output_cache_in_task = self.output_cache and not cls.completes_inline
        #: ... and before steps 4 and 5 (of an engine that does not complete inline).
        self.call_in_task = not cls.completes_inline


#: The protocol itself: no engine may define these.
_FINAL_METHODS = ("generate", "_start", "_protocol", "_done", "_failed", "_cancelled")


class InferenceEngine:
    """Base of engines. Subclasses implement ``_complete`` (and optionally ``_stream``)."""

    #: Engine kind, used in telemetry and the cache key.
    kind: ClassVar[str] = "engine"
    #: ``gen_ai.provider.name`` in telemetry.
    provider: ClassVar[str] = "spangraph"
    #: Canonical option name → the engine's wire name (absent: not supported, dropped).
    wire_names: ClassVar[Mapping[str, str]] = {}
    capabilities: Capabilities = Capabilities()
    #: How many generations this engine runs at once (the scheduler's per-engine limit).
    max_concurrency: int = 8
    #: True when the engine's own asynchronous steps (the primitive, and any of steps
    #: 3, 4 and 7 it refines) never enter a cancel scope (no threads, no timeouts of
    #: their own), so the scheduler may run them inline and move them to a task only
    #: if they wait. Engines that call ``anyio.to_thread`` leave it False.
    completes_inline: ClassVar[bool] = False

    #: Which asynchronous steps this class refines (see ``_Refined``); each engine
    #: reads it as ``self._refined``.
    _class_refined: ClassVar[_Refined]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        final = [name for name in _FINAL_METHODS if name in cls.__dict__]
        if final:
            raise TypeError(
                f"{cls.__name__} defines {final[0]}(), which is final: the generate protocol is "
                "the same for every engine. Implement _complete() (and optionally _stream()), "
                "or refine one of the protocol steps (handle_model_options, render, "
                "handle_output_cache, handle_input_cache, parse, store, telemetry)."
            )
        cls._class_refined = _Refined(cls)

    def __init__(self, *, defaults: Mapping[str, Any] | None = None) -> None:
        self.defaults: dict[str, Any] = check_options(defaults or {}, where=f"{self.kind} defaults")
        self._bound_state: ExecutionState = _IDENTITY
        self._base: InferenceEngine = self
        self._refined = type(self)._class_refined
        #: The span cache used when neither the state nor the run gives one.
        self.span_cache: Store | None = None

    # -- identity ------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model's name, as telemetry reports it."""
        return "unknown"

    @property
    def base(self) -> InferenceEngine:
        """The engine a view was made from (itself for an engine)."""
        return self._base

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this engine's outputs: kind, model, load parameters."""
        return {"kind": self.kind, "model": self.model}

    def server_address(self) -> tuple[str, int] | None:
        """``(host, port)`` for remote engines; ``None`` in-process."""
        return None

    def with_state(self, state: ExecutionState) -> InferenceEngine:
        """A view of this engine that generates under ``state`` (``state(engine)``)."""
        view = copy.copy(self)
        composed = compose(*self._bound_state.flatten(), *state.flatten())
        view._bound_state = composed if composed.flatten() else _IDENTITY
        return view

    # -- prefix-aware scheduling ------------------------------------------------------------

    def prefix_key(self, action: Any, state: ExecutionState) -> str | None:
        """The digest of the cached prompt prefix a generation would reuse (``None``: none).

        Engines with KV slots refine this; the scheduler uses it so that ready
        generations sharing an unwarmed prefix do not all prefill it at once.
        """
        return None

    def prefix_ready(self, digest: str) -> bool:
        """True when the prefix is already warm (in a slot, or saved)."""
        return True

    async def wait_prefix_ready(self, digest: str) -> None:
        """Return once ``prefix_ready(digest)`` is true.

        The scheduler awaits this while one generation warms a prefix, so that the
        generations sharing it start as soon as it is warm (while the warming one
        still decodes), not when that generation ends. This asks ``prefix_ready``
        every ``PREFIX_POLL_SECONDS``; an engine that knows the moment may refine it.
        """
        while not self.prefix_ready(digest):
            await anyio.sleep(PREFIX_POLL_SECONDS)

    # -- the protocol ----------------------------------------------------------------

    async def generate(
        self,
        action: Any,
        state: ExecutionState | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        into: ModelOutputThunk[Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        """Generate from ``action`` and return its thunk, done (or failed: then it raises).

        ``into`` is a thunk declared earlier with ``spangraph.generate()`` (the
        scheduler passes it); its state and options are used.
        """
        thunk = into if into is not None else declare(action, state, options)
        if not isinstance(thunk.producer, GenerationProducer):
            raise TypeError(f"generate(into=...) needs a generation's thunk, not {thunk!r}")
        await self._protocol(thunk, False)
        return thunk

    def _start(
        self, thunk: ModelOutputThunk[Any], driver: InlineDriver
    ) -> Callable[[], Awaitable[None]] | None:
        """Start the protocol inline, through ``driver``: as far as it goes without
        waiting (see the module's docstring).

        Returns ``None`` when the thunk is finished (done, or failed: its
        ``error`` says why), else the rest of the protocol: ``await rest()``, in
        the task it belongs to, finishes the thunk (and raises its error).
        """
        try:
            return driver.start(self._protocol(thunk, True))
        except Exception:
            return None  # the thunk failed, and says why

    async def _protocol(self, thunk: ModelOutputThunk[Any], inline: bool) -> None:
        """The generate protocol: its eight steps, in order (see the module's table).

        Finishes the thunk, and raises its error. ``inline``: run by an
        ``InlineDriver``, which hands the rest to a task where the protocol asks
        it to (``to_task``). A step an engine inherits is skipped where it would
        do nothing (``_Refined``).
        """
        refined = self._refined
        started = perf_counter()
        request: Request | None = None
        completion: Completion | None = None
        try:
            producer: GenerationProducer = thunk.producer  # type: ignore[assignment]
            action, declared = producer.action, producer.state
            state = self._bound_state if declared is None else self._effective_state(declared)
            thunk.state = _RUNNING

            # 1. handle_model_options
            if refined.model_options or state is not _IDENTITY or producer.options:
                options = self.handle_model_options(state, producer.options)
            else:
                options = self.defaults  # what the base step returns

            # 2. render; then which output memo applies
            request = self.render(action, state, options, producer.sample_index)
            request.thunk = thunk
            request.memo = _memo.memo_for(request, self)

            # 3. handle_output_cache
            if request.memo is not None or refined.output_cache:
                if inline and refined.output_cache_in_task:
                    await to_task()
                completion = await self.handle_output_cache(request)
            hit = completion is not None

            if completion is None:
                if inline and refined.call_in_task:
                    await to_task()
                # 4. handle_input_cache
                if refined.input_cache:
                    request = await self.handle_input_cache(request)
                # 5. the primitive: _stream when the thunk is streamed (and can be)
                facts = thunk._facts
                if facts is not None and facts.stream and self.capabilities.streaming:
                    completion = await self._stream_into(request, thunk)
                else:
                    completion = await self._complete(request)

            # 6. parse
            if refined.parse or type(action) not in TEXT_OUTPUT:
                parsed = self.parse(action, completion)
            else:
                parsed = completion.text  # what the base step returns

            # 7. store, handle_cache_eviction
            if not hit and (request.memo is not None or refined.store):
                await self.store(request, completion)
                await self.handle_cache_eviction(request)

        # 8. telemetry, however the generation ended
        except GeneratorExit:  # dropped unfinished (a hand-off its stopped run never ran)
            if request is not None:
                _memo.release(request)  # the key's lease, if step 3 took one
            raise  # and the run settles the thunk
        except anyio.get_cancelled_exc_class():
            self._cancelled(thunk, request, completion, started)
            raise
        except BaseException as error:
            self._failed(thunk, request, completion, error, started)
            raise
        self._done(thunk, request, completion, parsed, hit, started)

    def _done(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request,
        completion: Completion,
        parsed: Any,
        cache_hit: bool,
        started: float,
    ) -> None:
        """The thunk is done (with the protocol's own total time); then step 8."""
        text, _, usage, timings, _ = completion
        queue_ms, prefill_ms, decode_ms, _, first_token_ms = timings
        total_ms = (perf_counter() - started) * 1000
        # Timings made as the tuple it is (a named tuple's own __new__ is a Python call).
        timings = _new(Timings, (queue_ms, prefill_ms, decode_ms, total_ms, first_token_ms))
        thunk._set_done(text, parsed, usage, timings, cache_hit)
        state = request.state or _IDENTITY
        bus = _current_bus()
        if self._refined.telemetry or state is not _IDENTITY or (bus is not None and bus.records):
            self.telemetry(thunk, state, request, completion, cache_hit, None, started)

    def _failed(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request | None,
        completion: Completion | None,
        error: BaseException,
        started: float,
    ) -> None:
        """The thunk failed (a parse failure keeps the raw text, and the tokens the
        completion spent); then step 8."""
        if request is not None:
            _memo.release(request)  # the key's lease, if step 3 took one
        if completion is not None and not thunk.state.finished:
            thunk.usage, thunk.timings = completion.usage, completion.timings
        if isinstance(error, ParseError):
            thunk._set_failed(error, raw=error.raw)
        else:
            thunk._set_failed(error)
        self._record(thunk, request, completion, error, started)

    def _cancelled(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request | None,
        completion: Completion | None,
        started: float,
    ) -> None:
        """The generation was cancelled; then step 8."""
        thunk._set_cancelled()
        if request is not None:
            _memo.release(request)  # the key's lease, if step 3 took one
        self._record(thunk, request, completion, None, started)

    def _record(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request | None,
        completion: Completion | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        """Step 8 for a generation that did not finish."""
        if request is not None:
            state = request.state or _IDENTITY
        else:
            state = self._effective_state(getattr(thunk.producer, "state", None))
        self.telemetry(thunk, state, request, completion, False, error, started)

    def _effective_state(self, declared: Any) -> ExecutionState:
        """The engine view's bound state, then the declared one."""
        bound = self._bound_state
        if not isinstance(declared, ExecutionState):
            return bound
        if bound is _IDENTITY:
            return declared
        return compose(*bound.flatten(), *declared.flatten())

    async def stream(
        self, action: Any, state: ExecutionState | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """Generate from ``action``, yielding text as it is produced."""
        thunk = declare(action, state, options, where="stream()")
        thunk.facts.stream = True

        async def produce() -> None:
            # A failure is recorded on the thunk, and _follow() re-raises it.
            with contextlib.suppress(Exception):
                await self.generate(None, into=thunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async for delta in thunk._follow():
                yield delta

    # 1
    def handle_model_options(
        self, state: ExecutionState, call: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge engine defaults < state < call (all already validated)."""
        if state is _IDENTITY and not call:
            return self.defaults
        from_state = state.model_options()
        if not from_state and not call:
            return self.defaults
        return merge(self.defaults, from_state, call)

    # 2
    def render(
        self,
        action: Any,
        state: ExecutionState,
        options: Mapping[str, Any],
        sample_index: int = 0,
    ) -> Request:
        """Render the state's prefix spans and the action into a ``Request``."""
        prefix = state.prefix_spans() if state is not _IDENTITY else ()
        fast = FAST_RENDERS.get(type(action))  # what render_span tries first, without its call
        prompt = fast(action) if fast is not None else None
        if prompt is None:
            prompt = render_span(action)
        if prefix:
            prompt = Prompt.join([render_span(s) for s in prefix]) + _as_user(prompt)
        tools: ToolRequest | None = None
        if type(action) in TEXT_OUTPUT:
            schema = None  # a component whose output is plain text
        else:
            make_schema = getattr(action, "output_schema", None)
            schema = make_schema() if callable(make_schema) else None
            make_tools = TOOL_STEPS.get(type(action))  # a tool loop's step
            if make_tools is not None:
                tools = make_tools(action)
                if prefix:
                    joined = Prompt.join([render_span(s) for s in prefix])
                    tools = replace(tools, prompt=joined + _as_user(tools.prompt))
        request = Request.of(
            prompt=prompt,
            options=options,
            schema=schema,
            mode=self.capabilities.mode,
            action=action,
            state=state,
            sample_index=sample_index,
        )
        if tools is not None:
            request.tools = tools
        return request

    # 3
    async def handle_output_cache(self, request: Request) -> Completion | None:
        """Return the memoised completion for ``request``, or ``None``.

        ``request.memo`` is the memo that applies (``None``: none does; the
        protocol then skips this base step): see ``engines/_memo.py`` for
        which store, policy and key it holds. When another generation (of
        this process or another) holds the key's in-flight lease, this waits
        for its entry. The memo never fails a generation: see
        ``engines/_memo.py`` for what happens when it fails.
        """
        memo = request.memo
        if memo is None:
            return None
        completion = _memo.look_up(request, memo)
        if completion is AWAIT_ENTRY:
            completion = await _memo.await_entry(request, memo)
        return completion

    # 4
    async def handle_input_cache(self, request: Request) -> Request:
        """Route or prepare KV reuse for the request's cached prefix (none by default)."""
        return request

    # 5
    async def _complete(self, request: Request) -> Completion:
        """The primitive: run one request to completion."""
        raise NotImplementedError(f"{type(self).__name__} must implement _complete()")

    async def _stream(self, request: Request) -> AsyncIterator[str | Completion]:
        """Optional primitive: yield text deltas, then the final ``Completion``."""
        yield await self._complete(request)

    async def _stream_into(self, request: Request, thunk: ModelOutputThunk[Any]) -> Completion:
        """Step 5 when the thunk is being streamed: deltas go onto it as they come, and
        the time to the first one is recorded (``Timings.first_token_ms``)."""
        final: Completion | None = None
        called = perf_counter()
        first: float | None = None
        async for item in self._stream(request):
            if isinstance(item, Completion):
                final = item
            else:
                if first is None and item:
                    first = (perf_counter() - called) * 1000.0
                thunk._push_delta(item)
        if final is None:
            raise RuntimeError(f"{type(self).__name__}._stream() ended without a Completion")
        return final._replace(timings=final.timings._replace(first_token_ms=first))

    # 6
    def parse(self, action: Any, completion: Completion) -> Any:
        """Parse the text with the action's ``parse_output`` (text for a CBlock).

        A ``ParseError`` is placed at the generation, and says when the output was
        cut off at ``max_tokens`` (``finish_reason == "length"``)."""
        if type(action) in TEXT_OUTPUT or isinstance(action, CBlock):
            return completion.text
        try:
            return action.parse_output(completion.text)
        except ParseError as exc:
            if completion.finish_reason == "length":  # the token limit cut it off
                exc = exc.cut_off(completion.usage.output_tokens)
            raise exc.at(f"generate({span_label(action)})") from None

    # 7
    async def store(self, request: Request, completion: Completion) -> None:
        """Write the memo entry for ``request`` (in ``request.memo``, when one applies).

        A failed write is reported, never raised."""
        _memo.write(request, completion)

    async def handle_cache_eviction(self, request: Request | None = None) -> None:
        """Keep the memo within its budgets and drop expired entries.

        A failed eviction is reported, never raised."""
        if request is not None:
            _memo.evict(request)

    # 8
    def telemetry(
        self,
        thunk: ModelOutputThunk[Any],
        state: ExecutionState,
        request: Request | None,
        completion: Completion | None,
        cache_hit: bool,
        error: BaseException | None,
        started: float,
    ) -> None:
        """Record the generation on its state and emit it as an event.

        Nothing is built when nobody would see it (no listener, no state to log to).
        """
        bus = _current_bus()
        emit = bus.emit_record if bus is not None else None
        if emit is None and state is _IDENTITY:
            return
        model = self.model  # (a property: read once)
        response_model: str | None = None
        worker: WorkerRun | None = None
        if completion is not None:
            response_model = model
            raw = completion.raw
            if type(raw) is WorkerRun:  # the primitive ran on an executor's worker
                worker = raw
            elif raw is not None and type(raw) is not dict:
                # An OpenAI-compatible response names the model that answered.
                named = getattr(raw, "model", None)
                if type(named) is str and named:
                    response_model = named
        # The options are the request's mapping, not a copy (requests share their
        # engine's defaults; nothing changes them once merged).
        record = events.GenerationRecord.of(
            thunk._id or "",
            engine=self.kind,
            provider=self.provider,
            model=model,
            mode=self.capabilities.mode,
            options=request.options if request is not None else {},
            prompt=request.text if request is not None else "",
            output=completion.text if completion is not None else None,
            finish_reason=completion.finish_reason if completion is not None else None,
            usage=thunk.usage,
            timings=thunk.timings,
            cache_hit=cache_hit,
            error=error if error is not None and thunk.state is ThunkState.FAILED else None,
            server=self.server_address(),
            started=started,
            # gen_ai.output.type: what the request asked for (a schema: JSON)
            output_type=None if request is None else "text" if request.schema is None else "json",
            response_model=response_model,
            worker=worker,
            tools=request.tools.tools if request is not None and request.tools else None,
        )
        if state is not _IDENTITY:  # the shared no-state state keeps no logs (they would pile up)
            state._record(thunk, record)
            thunk.facts.logged_states = state._logged_states()
        if emit is not None:
            emit(record)

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release what the engine holds (threads, servers, connections)."""

    def close(self) -> None:
        """Synchronous ``aclose``, for engines that can release without an event loop."""

    async def __aenter__(self) -> InferenceEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


InferenceEngine._class_refined = _Refined(InferenceEngine)


def declare(
    action: Any,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    where: str = "generate()",
) -> ModelOutputThunk[Any]:
    """A thunk for a generation made directly on an engine (not declared in a graph):
    the given state, else the one ``with`` blocks apply; options checked here."""
    thunk: ModelOutputThunk[Any] = ModelOutputThunk(
        GenerationProducer(
            as_span(action, path=f"{where[:-2]}(action)"),
            state if state is not None else current_state(),
            check_options(options or {}, where=where),
        )
    )
    thunk._claimed = True  # whoever declared it runs it; awaiting it must not start a run
    return thunk


def _as_user(prompt: Prompt) -> Prompt:
    """After a chat history, the action is the user's turn, then the assistant's.

    An action with roles of its own (a ``Message``) keeps them and its own labels;
    the segments of one without roles (plain text, a component) become the user's
    turn, labelled ``user:`` once. Either way the prompt ends with the assistant's
    label, which completion-mode engines show and chat templates replace.
    """
    if not prompt.segments:
        return prompt
    owner = prompt.segments[0].span_id
    if prompt.is_chat:
        turn = prompt.segments
    else:
        turn = (
            Segment("user: ", owner, role="user", label=True),
            *(s._replace(role="user") for s in prompt.segments),
            Segment("\n", owner, role="user", label=True),
        )
    return Prompt((*turn, Segment("assistant:", owner, role="assistant", label=True)))
