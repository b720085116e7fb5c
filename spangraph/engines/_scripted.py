"""``ScriptedEngine``: deterministic answers and latencies, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar

import anyio

from ..nodes import Timings, Usage
from ._base import InferenceEngine
from ._errors import EngineRequestError
from ._types import Capabilities, Completion, Request

Reply = Callable[[Request], "str | Awaitable[str]"]


async def _sleep(delay: float) -> None:
    """``anyio.sleep``, without its backend lookup on asyncio (where it is
    ``asyncio.sleep``): the critical-path benchmark sleeps once per generation."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        await anyio.sleep(delay)  # not asyncio (trio)
    else:
        await asyncio.sleep(delay)


_INSTANT = Timings()


class _Counts:
    """What a ``ScriptedEngine`` and its views count, together."""

    __slots__ = ("calls", "in_flight", "max_in_flight")

    def __init__(self) -> None:
        self.calls = self.in_flight = self.max_in_flight = 0


class ScriptedEngine(InferenceEngine):
    """Answers from a function of the request, or a mapping from prompt text.

    ``reply`` is ``callable(request) -> str`` (sync or async; it may raise to
    simulate engine errors) or a mapping from prompt text to answer (with
    ``default`` for prompts it does not list). ``latency`` (seconds, or a
    function of the request) is slept before answering; with ``0`` the call
    never suspends, which is what scheduler benchmarks measure. Usage counts
    whitespace-separated words as tokens. ``calls`` counts primitive calls.
    """

    kind = "scripted"
    wire_names: ClassVar[Mapping[str, str]] = {
        name: name for name in ("temperature", "max_tokens", "top_p", "top_k", "seed")
    }
    capabilities = Capabilities(streaming=True, json_schema=True, mode="completion")
    completes_inline = True

    def __init__(
        self,
        reply: Reply | Mapping[str, str] | str = "ok",
        *,
        latency: float | Callable[[Request], float] = 0.0,
        default: str | None = None,
        max_concurrency: int = 64,
        name: str = "scripted",
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(defaults=defaults)
        self._reply = reply
        self._latency = latency
        self._default = default
        self._name = name
        self.max_concurrency = max_concurrency
        #: Calls and concurrency, shared with the engine's views (``with_state`` copies
        #: the engine, and a sampler's attempts go through a view).
        self._counts = _Counts()
        #: Instant completions of the fixed reply, by prompt length in tokens.
        self._instant: dict[int, Completion] = {}

    @staticmethod
    def tool_call(name: str, /, **arguments: Any) -> str:
        """A reply that calls tool ``name`` with ``arguments``, in the format a tool
        loop reads (``generate(..., tools=[...])``): ``{"tool": name, "arguments":
        {...}}``. A reply function may return it for some prompts (the first
        round's, say) and an answer for the others (a follow-up's prompt holds
        ``Tool result``)."""
        return json.dumps({"tool": name, "arguments": arguments})

    @property
    def calls(self) -> int:
        """Generations asked of this engine and its views."""
        return self._counts.calls

    @property
    def in_flight(self) -> int:
        """Generations under way now."""
        return self._counts.in_flight

    @property
    def max_in_flight(self) -> int:
        """The most generations that were under way at once."""
        return self._counts.max_in_flight

    @property
    def model(self) -> str:
        return self._name

    async def _answer(self, request: Request) -> str:
        reply = self._reply
        if isinstance(reply, str):
            return reply
        if isinstance(reply, Mapping):
            text = request.text
            if text in reply:
                return reply[text]
            if self._default is not None:
                return self._default
            raise EngineRequestError(f"ScriptedEngine has no answer for prompt {text[:80]!r}")
        out = reply(request)
        if inspect.isawaitable(out):
            out = await out
        return out

    def _delay(self, request: Request) -> float:
        latency = self._latency
        return latency(request) if callable(latency) else latency

    async def _complete(self, request: Request) -> Completion:
        counts = self._counts
        counts.calls += 1
        reply = self._reply
        if not self._latency and type(reply) is str:
            # Instant and fixed: what scheduler benchmarks measure. The completion is a
            # value (immutable), so one is made per prompt length and shared.
            if counts.in_flight >= counts.max_in_flight:
                counts.max_in_flight = counts.in_flight + 1
            prompt = request.prompt.text if "system" not in request.options else request.text
            prompt_tokens = len(prompt.split())
            completion = self._instant.get(prompt_tokens)
            if completion is None:
                completion = self._instant[prompt_tokens] = self._completion(request, reply, 0.0)
            return completion
        counts.in_flight += 1
        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        try:
            delay = self._delay(request)
            if delay > 0:
                await _sleep(delay)
            text = await self._answer(request)
        finally:
            counts.in_flight -= 1
        return self._completion(request, text, delay)

    async def _stream(self, request: Request) -> AsyncIterator[str | Completion]:
        counts = self._counts
        counts.calls += 1
        counts.in_flight += 1
        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        try:
            delay = self._delay(request)
            text = await self._answer(request)
            words = text.split(" ")
            for i, word in enumerate(words):
                if delay > 0:
                    await _sleep(delay / max(len(words), 1))
                yield word if i == 0 else " " + word
        finally:
            counts.in_flight -= 1
        yield self._completion(request, text, delay)

    @staticmethod
    def _completion(request: Request, text: str, delay: float) -> Completion:
        prompt_tokens = len(request.text.split())
        output_tokens = len(text.split())
        return Completion(
            text,
            "stop",
            Usage(prompt_tokens, output_tokens, 0),
            Timings(0.0, 0.0, delay * 1000, delay * 1000) if delay else _INSTANT,
        )
