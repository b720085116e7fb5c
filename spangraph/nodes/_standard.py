"""The standard components: Instruction, Message, ChatHistory, and Requirement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import Field, GetCoreSchemaHandler, PrivateAttr, field_validator
from pydantic_core import core_schema

from ._component import Component, Span
from ._span import Text
from ._state import ExecutionState

T = TypeVar("T")


@dataclass(frozen=True)
class Requirement:
    """A condition an output must meet: a parameter of an instruction, checked by samplers.

    ``validate`` is an optional Python check of the output; without one, a
    sampler asks an LLM judge. ``check_stream`` is an optional check of the text
    while it is generated: given the text so far, it returns why the output already
    fails (a reason), or ``None``; a ``RejectionSampler`` stops the generation at the
    first reason, without waiting for the rest. Only ``description`` and the checks'
    qualified names are content: two requirements with the same description and
    checks are the same requirement.
    """

    description: str
    validate: Callable[..., Any] | None = field(default=None, compare=False)
    check_stream: Callable[[str], str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError("Requirement needs a non-empty description")

    def __str__(self) -> str:
        return self.description

    def _sg_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "description": self.description,
            "validate": _qualified_name(self.validate),
        }
        if self.check_stream is not None:  # absent otherwise: earlier content ids hold
            value["check_stream"] = _qualified_name(self.check_stream)
        return value

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _coerce_requirement,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda r: r._sg_json()),
        )


def _qualified_name(check: Callable[..., Any] | None) -> str | None:
    if check is None:
        return None
    return f"{getattr(check, '__module__', '?')}.{getattr(check, '__qualname__', '?')}"


def _coerce_requirement(value: Any) -> Requirement:
    if isinstance(value, Requirement):
        return value
    if isinstance(value, str):
        return Requirement(value)
    raise ValueError(f"expected a Requirement or str, got {type(value).__name__}")


class Instruction(Component[T]):
    """Ask for something: a description, grounding context, examples and requirements.

    Grounding and examples are parts (spans: documents, earlier outputs);
    requirements are parameters, listed in the prompt.
    """

    description: Span
    grounding: list[Span] = Field(default_factory=list)
    examples: list[Span] = Field(default_factory=list)
    requirements: list[Requirement] = Field(default_factory=list)

    def _sg_render_items(self) -> list[Any]:
        items: list[Any] = [self.description]
        if self.grounding:
            items.append(Text("\n\nContext:\n"))
            for i, part in enumerate(self.grounding):
                if i:
                    items.append(Text("\n\n"))
                items.append(part)
        if self.examples:
            items.append(Text("\n\nExamples:"))
            for part in self.examples:
                items.append(Text("\n- "))
                items.append(part)
        if self.requirements:
            items.append(Text("\n\nRequirements:"))
            for req in self.requirements:
                items.append(Text(f"\n- {req.description}"))
        return items


#: The roles a message may have: those of the chat templates and the OpenAI chat API.
ROLES = ("system", "user", "assistant", "tool")


class Message(Component[str]):
    """One chat message. Chat engines see a role; completion engines see ``role: content``.
    ``role`` is one of ``ROLES``."""

    role: str
    content: Span

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(
                f"a message's role is one of {', '.join(map(repr, ROLES))}, not {role!r}"
            )
        return role

    def _sg_message_role(self) -> str | None:
        return self.role

    def _sg_render_items(self) -> list[Any]:
        return [Text(f"{self.role}: ", label=True), self.content, Text("\n", label=True)]


class ChatHistory(Component[str], ExecutionState):
    """A conversation so far. As a component its parts are the messages; as an
    execution state its messages come before the action of every generation
    declared under it."""

    messages: list[Message] = Field(default_factory=list)

    _sg_logs: dict[Any, Any] = PrivateAttr(default_factory=dict)

    def _sg_render_items(self) -> list[Any]:
        return list(self.messages)

    def prefix_spans(self) -> Sequence[Any]:
        return (self,) if self.messages else ()

    def fingerprint(self) -> str:
        return "ChatHistory"

    def append(self, role: str, content: Any) -> ChatHistory:
        """A new history with one more message (histories are immutable)."""
        return ChatHistory(messages=[*self.messages, Message(role=role, content=content)])

    def __hash__(self) -> int:
        return Component.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return Component.__eq__(self, other)
