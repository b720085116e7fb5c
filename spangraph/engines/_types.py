"""What passes between the protocol and an engine's primitive."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..nodes import ChatTurn, ExecutionState, ModelOutputThunk, Prompt, Timings, Usage


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do; the protocol adapts requests to it."""

    streaming: bool = False
    json_schema: bool = False
    kv_slots: bool = False
    logprobs: bool = False
    mode: Literal["completion", "chat"] = "completion"


@dataclass(slots=True)
class Request:
    """One generation request, in canonical form.

    ``options`` holds canonical names (and ``extra:`` pass-throughs); an
    engine maps them with ``wire_options()``. ``schema`` is the JSON schema
    the output must follow (``None`` for plain text).
    """

    prompt: Prompt
    options: Mapping[str, Any]
    schema: dict[str, Any] | None = None
    mode: Literal["completion", "chat"] = "completion"
    action: Any = None
    state: ExecutionState | None = None
    sample_index: int = 0
    #: The output-memo key (set by handle_output_cache when a cache is in use).
    key: str | None = None
    #: Digest of the leading cache=True segments (set by handle_input_cache).
    prefix_digest: str | None = None
    #: Engine-specific routing decided by handle_input_cache (a llama.cpp slot, say).
    route: dict[str, Any] = field(default_factory=dict)
    thunk: ModelOutputThunk[Any] | None = None

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

    def messages(self) -> list[ChatTurn]:
        """The prompt as chat turns (chat mode), the system message first."""
        turns = self.prompt.as_messages()
        system = self.system
        return [ChatTurn("system", system), *turns] if system else turns


class Completion(NamedTuple):
    """What an engine returns: text, why it stopped, usage, timings, and the raw response."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Usage()
    timings: Timings = Timings()
    raw: Any = None
