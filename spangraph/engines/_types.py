"""What passes between the protocol and an engine's primitive."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..nodes import ChatTurn, ExecutionState, ModelOutputThunk, Prompt, Segment, Timings, Usage

if TYPE_CHECKING:
    from ._memo import MemoRoute


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do; the protocol adapts requests to it."""

    streaming: bool = False
    json_schema: bool = False
    kv_slots: bool = False
    logprobs: bool = False
    mode: Literal["completion", "chat"] = "completion"


class CachedPrefix(NamedTuple):
    """The leading ``cache=True`` segments of a prompt, whose KV state an engine keeps."""

    #: Their digest (``spangraph.cache.prefix_key``): the KV store's key.
    digest: str
    #: Their text, as the engine prefills it.
    text: str


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A tool-loop round as an engine with a tools API takes it (plain data).

    ``render`` makes it for an action that offers tools (a tool loop's step:
    ``spangraph.graph.ToolStep.tool_request``). ``tools`` are OpenAI function
    definitions (``{"type": "function", "function": {name, description,
    parameters}}``); ``choice`` is ``"auto"``, ``"required"``, ``"none"`` or a
    tool's name; ``prompt`` is the action's own prompt (the state's prefix spans
    first), without the JSON reply instructions that ``Request.prompt`` holds;
    ``history`` the rounds so far as OpenAI chat messages: an ``assistant`` message
    with ``tool_calls`` (``arguments`` as JSON text), then one ``tool`` message per
    call (``tool_call_id``, ``content``). It is a function of the same parts as the
    request's prompt and schema, so the memo key (which they make) covers it.

    An engine that answers through its tools API returns, as the completion's
    text, ``{"tool_calls": [{"name": ..., "arguments": ...}, ...]}`` or
    ``{"answer": TEXT}``: what the loop reads from every engine.
    """

    tools: tuple[Mapping[str, Any], ...]
    choice: str
    prompt: Prompt
    history: tuple[Mapping[str, Any], ...] = ()

    @property
    def tool_choice(self) -> Any:
        """``choice`` as the OpenAI API takes it (a tool's name as an object)."""
        if self.choice in ("auto", "required", "none"):
            return self.choice
        return {"type": "function", "function": {"name": self.choice}}

    def messages(self, system: str | None = None) -> list[dict[str, Any]]:
        """The chat: the system text, the action's turns, then the rounds so far."""
        turns = [{"role": t.role, "content": t.content} for t in self.prompt.as_messages()]
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *turns, *(dict(m) for m in self.history)]

    def to_plain(self) -> dict[str, Any]:
        """Plain data (an executor's wire format); ``from_plain`` reads it back."""
        return {
            "tools": [dict(t) for t in self.tools],
            "choice": self.choice,
            "segments": [list(seg) for seg in self.prompt.segments],
            "history": [dict(m) for m in self.history],
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> ToolRequest:
        return cls(
            tuple(data["tools"]),
            str(data["choice"]),
            Prompt(tuple(Segment(*seg) for seg in data["segments"])),
            tuple(data["history"]),
        )


#: The action classes that offer tools, each with what makes its ``ToolRequest``
#: (``spangraph.graph.ToolStep`` registers itself): ``render`` looks an action's class
#: up here, a dict lookup, where an attribute that most actions lack would cost a
#: pydantic miss (microseconds) per generation.
TOOL_STEPS: dict[type, Callable[[Any], ToolRequest]] = {}


def tool_reply_text(calls: list[tuple[str, Any]] | None, content: str | None) -> str:
    """A tools API's answer as the loop reads it: ``calls`` as (name, arguments: an
    object or its JSON text) pairs, else ``content`` as the answer."""
    if calls:
        made = []
        for name, arguments in calls:
            if isinstance(arguments, str):
                # Kept as text when it does not parse: the loop reports that.
                with contextlib.suppress(ValueError):
                    arguments = json.loads(arguments) if arguments.strip() else {}
            made.append({"name": name, "arguments": arguments})
        return json.dumps({"tool_calls": made})
    return json.dumps({"answer": content or ""})


@dataclass(slots=True)
class Request:
    """One generation request, in canonical form (step 2, ``render``, makes it).

    ``options`` holds canonical names (and ``extra:<name>`` pass-throughs); an
    engine maps them to its own names (its ``wire_names``). ``schema`` is the JSON schema
    the output must follow (``None`` for plain text). The fields after
    ``sample_index`` are filled in by the protocol's later steps.
    """

    prompt: Prompt
    options: Mapping[str, Any]
    schema: dict[str, Any] | None = None
    mode: Literal["completion", "chat"] = "completion"
    action: Any = None
    state: ExecutionState | None = None
    sample_index: int = 0
    #: The thunk the request generates (set by the protocol after step 2).
    thunk: ModelOutputThunk[Any] | None = None
    #: The output memo the generation is kept in (store, policy, key), when one
    #: applies: set before step 3, which looks it up, and step 7 writes it.
    memo: MemoRoute | None = None
    #: The output-memo key (``memo.key``, for engines that log it).
    key: str | None = None
    #: The cached prefix whose KV state step 5 reuses (set by ``handle_input_cache``).
    prefix: CachedPrefix | None = None
    #: The tools offered, for an engine with a tools API (set by ``render`` for a
    #: tool loop's step; ``None`` otherwise): see ``ToolRequest``.
    tools: ToolRequest | None = None

    @classmethod
    def of(
        cls,
        *,
        prompt: Prompt,
        options: Mapping[str, Any],
        schema: dict[str, Any] | None,
        mode: Literal["completion", "chat"],
        action: Any,
        state: ExecutionState | None,
        sample_index: int,
    ) -> Request:
        """The request ``render`` works out, every field named (keyword-only: none can
        be swapped). It calls the class positionally: a class called with keywords
        builds a dict of them first (``docs/design/protocol.md``)."""
        return cls(prompt, options, schema, mode, action, state, sample_index)

    @property
    def system(self) -> str | None:
        value = self.options.get("system")
        return value if isinstance(value, str) else None

    @property
    def text(self) -> str:
        """The prompt as one string (completion mode), the system text first."""
        if "system" in self.options:  # read per generation: no property call without one
            system = self.system
            if system:
                return f"{system}\n\n{self.prompt.text}"
        return self.prompt.text

    def transcript_stops(self) -> list[str]:
        """Where a chat rendered as a plain transcript (``user: ...`` lines, for a model
        with no chat template) stops: at the next role label, ``"\\n<role>:"`` for
        each role in it and the user's and assistant's. Empty when the prompt is not a
        chat."""
        roles = {seg.role for seg in self.prompt.segments if seg.role}
        if not roles:
            return []
        return [f"\n{role}:" for role in sorted(roles | {"user", "assistant"})]

    def messages(self) -> list[ChatTurn]:
        """The prompt as chat turns (chat mode), the system message first."""
        turns = self.prompt.as_messages()
        system = self.system
        return [ChatTurn("system", system), *turns] if system else turns


class WorkerRun(NamedTuple):
    """Where and when a generation's primitive ran on a worker of an executor
    (``Completion.raw`` of a remote engine's completion): the worker's address and
    its wall-clock start and end (seconds since the epoch, the worker's clock)."""

    address: str
    started: float
    ended: float


class Completion(NamedTuple):
    """What an engine returns: text, why it stopped, usage, timings, and the raw response."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Usage()
    timings: Timings = Timings()
    raw: Any = None
