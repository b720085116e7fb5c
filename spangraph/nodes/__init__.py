"""Spans: text blocks, components made of parts, and lazy model outputs."""

from ._cblock import CBlock
from ._component import Component, Span
from ._errors import (
    CycleError,
    DigestError,
    MissingProducerError,
    NotASpanError,
    ParameterError,
    ParseError,
    SpanError,
    TemplateError,
    ThunkNotDoneError,
)
from ._parsing import output_schema, parse_as
from ._prompt import ChatTurn, Prompt, Segment
from ._span import (
    ComponentLike,
    Text,
    children_of,
    is_span,
    node_kind,
    own_segment,
    render_span,
    span_id,
    span_label,
)
from ._standard import ChatHistory, Instruction, Message, Requirement
from ._state import ComposedState, ExecutionState, compose, current_state
from ._thunk import (
    GenerationProducer,
    ModelOutputThunk,
    Producer,
    StateLike,
    ThunkState,
    Timings,
    Usage,
)

__all__ = [
    "CBlock",
    "ChatHistory",
    "ChatTurn",
    "Component",
    "ComponentLike",
    "ComposedState",
    "CycleError",
    "DigestError",
    "ExecutionState",
    "GenerationProducer",
    "Instruction",
    "Message",
    "MissingProducerError",
    "ModelOutputThunk",
    "NotASpanError",
    "ParameterError",
    "ParseError",
    "Producer",
    "Prompt",
    "Requirement",
    "Segment",
    "Span",
    "SpanError",
    "StateLike",
    "TemplateError",
    "Text",
    "ThunkNotDoneError",
    "ThunkState",
    "Timings",
    "Usage",
    "children_of",
    "compose",
    "current_state",
    "is_span",
    "node_kind",
    "output_schema",
    "own_segment",
    "parse_as",
    "render_span",
    "span_id",
    "span_label",
]
