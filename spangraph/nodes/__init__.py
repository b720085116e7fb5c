"""Spans: text blocks, components made of parts, and lazy model outputs.

The user API of spans. Custom components (the ``ComponentLike`` protocol)
render with ``render_span`` and ``own_segment`` and may parse with
``parse_as`` and ``output_schema``. What a thunk is made from (producers,
``current_state``, ``span_id``) is in ``spangraph.lowlevel``.
"""

from ._cblock import CBlock as CBlock
from ._component import Component as Component
from ._component import Span as Span
from ._errors import CycleError as CycleError
from ._errors import DigestError as DigestError
from ._errors import MissingProducerError as MissingProducerError
from ._errors import NotASpanError as NotASpanError
from ._errors import ParameterError as ParameterError
from ._errors import ParseError as ParseError
from ._errors import SpanError as SpanError
from ._errors import TemplateError as TemplateError
from ._errors import ThunkNotDoneError as ThunkNotDoneError
from ._parsing import output_schema as output_schema
from ._parsing import parse_as as parse_as
from ._prompt import ChatTurn as ChatTurn
from ._prompt import Prompt as Prompt
from ._prompt import Segment as Segment
from ._span import ComponentLike as ComponentLike
from ._span import Text as Text
from ._span import own_segment as own_segment
from ._span import render_span as render_span
from ._standard import ChatHistory as ChatHistory
from ._standard import Instruction as Instruction
from ._standard import Message as Message
from ._standard import Requirement as Requirement
from ._state import ExecutionState as ExecutionState
from ._thunk import ModelOutputThunk as ModelOutputThunk
from ._thunk import ThunkState as ThunkState
from ._thunk import Timings as Timings
from ._thunk import Usage as Usage

__all__ = [
    "CBlock",
    "ChatHistory",
    "ChatTurn",
    "Component",
    "ComponentLike",
    "CycleError",
    "DigestError",
    "ExecutionState",
    "Instruction",
    "Message",
    "MissingProducerError",
    "ModelOutputThunk",
    "NotASpanError",
    "ParameterError",
    "ParseError",
    "Prompt",
    "Requirement",
    "Segment",
    "Span",
    "SpanError",
    "TemplateError",
    "Text",
    "ThunkNotDoneError",
    "ThunkState",
    "Timings",
    "Usage",
    "output_schema",
    "own_segment",
    "parse_as",
    "render_span",
]
