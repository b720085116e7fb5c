"""``InferenceEngine``: the fixed generate protocol.

``generate()`` is final. It runs these steps, each a method an engine may
refine but never reorder:

1. ``handle_model_options`` — engine defaults < execution state < call.
2. ``render`` — the action (after the state's prefix spans) → ``Request``.
3. ``handle_output_cache`` — look the request up in the output memo.
4. ``handle_input_cache`` — KV reuse for ``cache=True`` prefixes.
5. ``_complete`` / ``_stream`` — the one primitive an engine implements.
6. ``parse`` — the action's ``parse_output``; a failure keeps the raw text.
7. ``store`` + ``handle_cache_eviction`` — write the memo, keep budgets.
   The memo never fails or loses a generation (``engines/_memo.py``).
8. ``telemetry`` — one ``GenerationRecord`` event, success or failure.

Like httpx's transports, an engine is a primitive plus its capabilities;
option merging, caching, parsing and telemetry are the same for all.

How the steps run: ``generate()`` is ``_start()`` and, when that could not
finish, the coroutine function it returns (``_rest``). ``_start`` runs the
steps that never wait, synchronously: 1, 2 and (when the engine inherits
it) 3, and for an engine that ``completes_inline`` the primitive too,
driven by hand until it would wait. So the scheduler starts every
generation inline and makes a task only for what really waits; a memo hit
or an instant engine costs no coroutine of the protocol's own. Which steps
an engine inherits is worked out once per class (``_Plan``): an inherited
step that would do nothing is skipped, a refined one always runs. All of
``generate``, ``_start``, ``_rest`` and their helpers are final.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from time import perf_counter
from typing import Any, ClassVar, TypeVar

import anyio

from .. import events
from ..cache import AUTO
from ..cache._internal import memo_key, run_cache
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
from ._handoff import RETURNED, InlineDriver, Resumed
from ._memo import AWAIT_ENTRY
from ._options import check_options, merge
from ._states import Identity
from ._types import Capabilities, Completion, Request

T = TypeVar("T")
_IDENTITY = Identity()
_RUNNING = ThunkState.RUNNING
_DONE = ThunkState.DONE
_new = tuple.__new__
_current_bus = events._bus.get
#: Base steps that are synchronous underneath (3) or do nothing without a memo (4, 7):
#: a class that inherits them runs them without awaiting a coroutine per step. Steps
#: 1 and 8 are skipped when the base step would return at once (no state, no call
#: options; nobody listening and no state to log to).
_SKIPPABLE_STEPS = (
    "handle_model_options",
    "handle_output_cache",
    "handle_input_cache",
    "store",
    "handle_cache_eviction",
    "telemetry",
)
_STORE_STEPS = frozenset({"store", "handle_cache_eviction"})


class _Plan:
    """What an engine class's inherited protocol steps allow, decided once per class.

    Each engine holds its class's plan in an attribute of its own (``_plan``),
    and the protocol reads it per generation: Python 3.11 specialises reads of
    an instance's own attributes and of slots, but not of class attributes read
    through an instance.
    """

    __slots__ = (
        "inline_call",
        "plain_options",
        "plain_parse",
        "plain_telemetry",
        "sync_lookup",
        "sync_store",
    )

    def __init__(self, steps: frozenset[str], completes_inline: bool, plain_parse: bool) -> None:
        #: step 1 may be skipped when there are no state and call options;
        self.plain_options = "handle_model_options" in steps
        #: step 3 is synchronous underneath;
        self.sync_lookup = "handle_output_cache" in steps
        #: step 7 is synchronous underneath (and does nothing without a memo);
        self.sync_store = steps >= _STORE_STEPS
        #: step 8 does nothing when nobody listens and there is no state to log to;
        self.plain_telemetry = "telemetry" in steps
        #: step 5 may be driven by hand (``completes_inline``, and step 4 inherited);
        self.inline_call = completes_inline and "handle_input_cache" in steps
        #: step 6 is the base one: plain-text components keep the text as it is.
        self.plain_parse = plain_parse


#: The protocol itself: no engine may define these.
_FINAL_METHODS = ("generate", "_start", "_rest", "_succeeded", "_failed", "_record")


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
    #: True when steps 4-8 never enter a cancel scope (no threads, no timeouts of
    #: their own), so the scheduler may start them inline and move them to a task
    #: only if they wait. Engines that call ``anyio.to_thread`` leave it False.
    completes_inline: ClassVar[bool] = False

    #: The protocol steps this class takes from ``InferenceEngine`` unchanged.
    _inherited_steps: ClassVar[frozenset[str]] = frozenset(_SKIPPABLE_STEPS)

    #: What those steps allow (see ``_Plan``); each engine reads it as ``self._plan``.
    _class_plan: ClassVar[_Plan] = _Plan(frozenset(_SKIPPABLE_STEPS), False, True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._inherited_steps = frozenset(
            name
            for name in _SKIPPABLE_STEPS
            if getattr(cls, name) is getattr(InferenceEngine, name)
        )
        cls._class_plan = _Plan(
            cls._inherited_steps, cls.completes_inline, cls.parse is InferenceEngine.parse
        )
        final = [name for name in _FINAL_METHODS if name in cls.__dict__]
        if final:
            raise TypeError(
                f"{cls.__name__} defines {final[0]}(), which is final: the generate protocol is "
                "the same for every engine. Implement _complete() (and optionally _stream()), "
                "or refine one of the protocol steps (handle_model_options, render, "
                "handle_output_cache, handle_input_cache, parse, store, telemetry)."
            )

    def __init__(self, *, defaults: Mapping[str, Any] | None = None) -> None:
        self.defaults: dict[str, Any] = check_options(defaults or {}, where=f"{self.kind} defaults")
        self._bound_state: ExecutionState = _IDENTITY
        self._base: InferenceEngine = self
        self._plan = type(self)._class_plan
        #: The span cache used when neither the state nor the run gives one (an
        #: attribute of the instance only: it is read per generation).
        self.span_cache: Any = None

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
        rest = self._start(thunk)
        if rest is not None:
            await rest()
        elif thunk.state is not _DONE:
            assert thunk.error is not None
            raise thunk.error
        return thunk

    def _start(
        self, thunk: ModelOutputThunk[Any], driver: InlineDriver | None = None
    ) -> Callable[[], Awaitable[None]] | None:
        """Run the protocol as far as it goes without waiting.

        Returns ``None`` when the thunk is finished (done, or failed: its
        ``error`` says why), else the rest of the protocol as a coroutine
        function, which finishes the thunk (and raises its error). Steps 1, 2
        and an inherited step 3 are synchronous; an output-cache hit finishes
        here. On a miss, an engine that ``completes_inline`` (and inherits
        step 4) has its primitive driven by hand until it would wait; any
        other engine stops before step 4, so that nothing which could enter a
        cancel scope (a worker thread, a timeout) runs before the caller has
        moved the rest into the task it belongs to. Final, like ``generate``.
        """
        started = perf_counter()
        plan = self._plan
        request: Request | None = None
        completion: Completion | None = None
        try:
            producer: GenerationProducer = thunk.producer  # type: ignore[assignment]
            declared = producer.state
            effective = self._bound_state if declared is None else self._effective_state(declared)
            thunk.state = _RUNNING
            if effective is _IDENTITY and not producer.options and plan.plain_options:
                opts: Mapping[str, Any] = self.defaults  # 1, as the base step has it
            else:
                opts = self.handle_model_options(effective, producer.options)  # 1
            action = producer.action
            request = self.render(action, effective, opts, producer.sample_index)  # 2
            request.thunk = thunk
            if not plan.sync_lookup:
                return partial(self._rest, thunk, request, started, None, None, False)
            completion = self._lookup_output(request)  # 3
            if completion is not None:
                if completion is AWAIT_ENTRY:  # another generation is making it: wait in a task
                    return partial(self._rest, thunk, request, started, completion, None, True)
                # a hit: 6 and 8 (7 has nothing to store)
                self._succeeded(
                    thunk, request, completion, self.parse(action, completion), True, started
                )
                return None
            if not plan.inline_call or (thunk._meta and self._streams(thunk)):
                return partial(self._rest, thunk, request, started, None, None, True)
            call = self._complete(request)  # 5, driven by hand
            if driver is not None:
                waiting = driver.send(call)
                if waiting is not RETURNED:
                    finish = driver.hand_off(waiting)
                    return partial(self._rest, thunk, request, started, None, finish, True)
                completion = driver.out[0]
            else:
                try:
                    waiting = call.send(None)
                except StopIteration as stop:
                    completion = stop.value
                else:
                    resume = Resumed(call, waiting)
                    return partial(self._rest, thunk, request, started, None, resume, True)
            if not plan.sync_store:
                return partial(self._rest, thunk, request, started, completion, None, True)
            if plan.plain_parse and type(action) in TEXT_OUTPUT:
                parsed = completion.text  # 6, as the base step does it
            else:
                parsed = self.parse(action, completion)  # 6
            if request.route and "memo" in request.route:  # 7, as the base steps do it
                self._put(request, completion)
                self._evict(request)
            self._succeeded(thunk, request, completion, parsed, False, started)  # 8
        except BaseException as exc:
            if driver is not None:
                driver.renew()  # (it is over if the primitive raised in it)
            self._failed(thunk, request, completion, exc, started)
            if not isinstance(exc, Exception):
                raise
        return None

    def _streams(self, thunk: ModelOutputThunk[Any]) -> bool:
        """Whether step 5 streams (someone asked the thunk to, and the engine can)."""
        meta = thunk._meta
        return bool(self.capabilities.streaming and meta and meta.get("stream"))

    async def _rest(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request,
        started: float,
        completion: Completion | None,
        call: Awaitable[Completion] | None,
        looked_up: bool,
    ) -> None:
        """The protocol from where ``_start`` stopped: step 3 unless ``looked_up``
        (or its wait, when ``completion`` is ``AWAIT_ENTRY``); then the primitive
        (``call``: the rest of the one ``_start`` began); 6-8."""
        cache_hit = False
        try:
            if not looked_up:
                completion = await self.handle_output_cache(request)  # 3
                cache_hit = completion is not None
            elif completion is AWAIT_ENTRY:  # 3: another generation holds the key's lease
                completion = await _memo.await_entry(request)
                cache_hit = completion is not None
            if completion is None:
                if call is not None:
                    completion = await call  # 5, where _start left it
                else:
                    if "handle_input_cache" not in self._inherited_steps:  # 4
                        request = await self.handle_input_cache(request)
                    if self._streams(thunk):  # 5
                        completion = await self._stream_into(request, thunk)
                    else:
                        completion = await self._complete(request)
            parsed = self.parse(thunk.producer.action, completion)  # type: ignore[union-attr]  # 6
            # 7 (the base steps do nothing unless step 3 found a memo for the request)
            if not cache_hit and ("memo" in request.route or not self._plan.sync_store):
                await self.store(request, completion)
                await self.handle_cache_eviction(request)
        except anyio.get_cancelled_exc_class():
            thunk._set_cancelled()
            _memo.release(request)  # the key's lease, if step 3 took one
            self._record(thunk, request, completion, cache_hit, None, started)  # 8
            raise
        except BaseException as exc:
            self._failed(thunk, request, completion, exc, started)
            raise
        self._succeeded(thunk, request, completion, parsed, cache_hit, started)  # 8

    def _succeeded(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request,
        completion: Completion,
        parsed: Any,
        cache_hit: bool,
        started: float,
    ) -> None:
        """The thunk is done (with the protocol's own total time); then step 8."""
        # Read by unpacking, and Timings made without its Python-level __new__: this
        # runs per generation, and a named tuple's fields are read through descriptors.
        text, _, usage, timings, _ = completion
        queue_ms, prefill_ms, decode_ms, _ = timings
        total_ms = (perf_counter() - started) * 1000
        thunk._set_done(
            text,
            parsed,
            usage,
            _new(Timings, (queue_ms, prefill_ms, decode_ms, total_ms)),
            cache_hit,
        )
        state = request.state
        if state is _IDENTITY and self._plan.plain_telemetry:
            bus = _current_bus()
            if bus is None or not bus.records:
                return  # what the base step would do: nothing
        self.telemetry(
            thunk,
            state if state is not None else _IDENTITY,
            request,
            completion,
            cache_hit,
            None,
            started,
        )

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
        if request is not None and request.route:
            _memo.release(request)  # the key's lease, if step 3 took one
        if completion is not None and not thunk.state.finished:
            thunk.usage, thunk.timings = completion.usage, completion.timings
        if isinstance(error, ParseError):
            thunk._set_failed(error, raw=error.raw)
        else:
            thunk._set_failed(error)
        self._record(thunk, request, completion, False, error, started)

    def _record(
        self,
        thunk: ModelOutputThunk[Any],
        request: Request | None,
        completion: Completion | None,
        cache_hit: bool,
        error: BaseException | None,
        started: float,
    ) -> None:
        """Step 8, unless the base step would do nothing (nobody listening, no state)."""
        if request is not None:
            state = request.state if request.state is not None else _IDENTITY
        else:
            declared = getattr(thunk.producer, "state", None)
            state = self._bound_state if declared is None else self._effective_state(declared)
        bus = _current_bus()
        if (
            state is not _IDENTITY
            or not self._plan.plain_telemetry
            or (bus is not None and bus.records)
        ):
            self.telemetry(thunk, state, request, completion, cache_hit, error, started)

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
        thunk.meta["stream"] = True

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
        if type(action) in TEXT_OUTPUT:
            schema = None  # a component whose output is plain text
        else:
            make_schema = getattr(action, "output_schema", None)
            schema = make_schema() if callable(make_schema) else None
        return Request(  # positional (prompt, options, schema, mode, action, state, index)
            prompt,
            options,
            schema,
            self.capabilities.mode,
            action,
            state,
            sample_index,
        )

    # 3
    async def handle_output_cache(self, request: Request) -> Completion | None:
        """Return the memoised completion for ``request``, or ``None``.

        The store is the state's span cache, else the run's, else the
        engine's; the policy is the node's, else the state's, else the run's,
        else ``CachePolicy("auto")`` (deterministic generations only). The
        key is ``spangraph.cache.memo_key`` (see its module for what is in it).
        When another generation (of this process or another) holds the key's
        in-flight lease, this waits for its entry. The memo never fails a
        generation: see ``engines/_memo.py`` for what happens when it fails.
        """
        completion = self._lookup_output(request)
        if completion is AWAIT_ENTRY:
            completion = await _memo.await_entry(request)
        return completion

    def _lookup_output(self, request: Request) -> Completion | None:
        run_store, run_policy = run_cache()
        state = request.state
        # Explicit None checks throughout: an empty store is falsy (it has a length).
        store = state.span_cache if state is not _IDENTITY and state is not None else None
        if store is None:
            store = run_store if run_store is not None else self.span_cache
            if store is None:
                return None  # no store anywhere: the policy does not matter
        producer = request.thunk.producer if request.thunk is not None else None
        policy = getattr(producer, "cache", None)
        if policy is None and state is not None:
            policy = state.cache_policy
        if policy is None:
            policy = run_policy if run_policy is not None else AUTO
        if not policy.applies(request.options):
            return None
        key = memo_key(
            {**self.fingerprint(), "mode": self.capabilities.mode},
            request.prompt,
            request.schema,
            request.options,
            request.sample_index,
        )
        request.key = key
        return _memo.look_up(request, store, policy, key)

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
        """Step 5 when the thunk is being streamed: deltas go onto it as they come."""
        final: Completion | None = None
        async for item in self._stream(request):
            if isinstance(item, Completion):
                final = item
            else:
                thunk._push_delta(item)
        if final is None:
            raise RuntimeError(f"{type(self).__name__}._stream() ended without a Completion")
        return final

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
        """Write the memo entry for ``request`` (when step 3 looked it up)."""
        self._put(request, completion)

    def _put(self, request: Request, completion: Completion) -> None:
        _memo.write(request, completion)  # a failed write is reported, never raised

    async def handle_cache_eviction(self, request: Request | None = None) -> None:
        """Keep the memo within its budgets and drop expired entries."""
        if request is not None:
            self._evict(request)

    def _evict(self, request: Request) -> None:
        _memo.evict(request)  # a failed eviction is reported, never raised

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
        text: str | None = None
        finish_reason: str | None = None
        if completion is not None:
            text, finish_reason, _, _, _ = completion
        # Positional, in field order: with keywords, binding the arguments cost more
        # than building the record. The options are the request's mapping, not a copy
        # (requests share their engine's defaults; nothing changes them once merged).
        record = events.GenerationRecord(
            thunk._id or "",
            self.kind,
            self.provider,
            self.model,
            self.capabilities.mode,
            request.options if request is not None else {},
            request.text if request is not None else "",
            text,
            finish_reason,
            thunk.usage,
            thunk.timings,
            cache_hit,
            error if error is not None and thunk.state is ThunkState.FAILED else None,
            self.server_address(),
            started,
        )
        if state is not _IDENTITY:  # the shared no-state state keeps no logs (they would pile up)
            state._record(thunk, record)
            thunk.meta["logged_states"] = state._logged_states()
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
    """After a chat history, the action is the user's turn (and then the assistant's)."""
    segments = [
        s if s.role else Segment(s.text, s.span_id, s.cache, "user", s.label)
        for s in prompt.segments
    ]
    if not segments:
        return prompt
    owner = segments[0].span_id
    return Prompt(
        (
            Segment("user: ", owner, role="user", label=True),
            *segments,
            Segment("\nassistant:", owner, role="user", label=True),
        )
    )
