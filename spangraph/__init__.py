"""spangraph: run generative programs (LLM calls and the code around them) as graphs."""

from .graph import NodeInfo, SpanGraph, compile, generate
from .nodes import (
    CBlock,
    ChatHistory,
    Component,
    ExecutionState,
    Instruction,
    Message,
    ModelOutputThunk,
    ParseError,
    Prompt,
    Requirement,
    Segment,
    Span,
    SpanError,
    ThunkState,
)

__all__ = [
    "CBlock",
    "ChatHistory",
    "Component",
    "ExecutionState",
    "Instruction",
    "Message",
    "ModelOutputThunk",
    "NodeInfo",
    "ParseError",
    "Prompt",
    "Requirement",
    "Segment",
    "Span",
    "SpanError",
    "SpanGraph",
    "ThunkState",
    "compile",
    "generate",
]
