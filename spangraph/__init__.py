"""spangraph: run generative programs (LLM calls and the code around them) as graphs.

What is public: the names here and in the subpackages' ``__init__`` (``nodes``,
``graph``, ``engines``, ``cache``, ``sampling``, ``tracing``) and the module
``events``, each listed in its ``__all__``; ``spangraph.engines`` is also the
API for writing an engine. ``spangraph.lowlevel`` holds the hooks for code that
extends spangraph further. Everything else (modules whose names start with an
underscore, the packages' ``_internal`` modules) is private and may change in
any release.
"""

from .engines import Identity as Identity
from .engines import options as options
from .graph import Interrupt as Interrupt
from .graph import InterruptError as InterruptError
from .graph import NodeFailedError as NodeFailedError
from .graph import RetryPolicy as RetryPolicy
from .graph import Run as Run
from .graph import SpanGraph as SpanGraph
from .graph import Tool as Tool
from .graph import arun as arun
from .graph import arun_stream as arun_stream
from .graph import ask as ask
from .graph import compile as compile
from .graph import generate as generate
from .graph import interrupt as interrupt
from .graph import run as run
from .graph import task as task
from .graph import tool as tool
from .nodes import CBlock as CBlock
from .nodes import ChatHistory as ChatHistory
from .nodes import Component as Component
from .nodes import ExecutionState as ExecutionState
from .nodes import Instruction as Instruction
from .nodes import Message as Message
from .nodes import ModelOutputThunk as ModelOutputThunk
from .nodes import ParseError as ParseError
from .nodes import Prompt as Prompt
from .nodes import Requirement as Requirement
from .nodes import Segment as Segment
from .nodes import Span as Span
from .nodes import SpanError as SpanError
from .nodes import ThunkState as ThunkState
from .sampling import sample as sample

__all__ = [
    "CBlock",
    "ChatHistory",
    "Component",
    "ExecutionState",
    "Identity",
    "Instruction",
    "Interrupt",
    "InterruptError",
    "Message",
    "ModelOutputThunk",
    "NodeFailedError",
    "ParseError",
    "Prompt",
    "Requirement",
    "RetryPolicy",
    "Run",
    "Segment",
    "Span",
    "SpanError",
    "SpanGraph",
    "ThunkState",
    "Tool",
    "arun",
    "arun_stream",
    "ask",
    "compile",
    "generate",
    "interrupt",
    "options",
    "run",
    "sample",
    "task",
    "tool",
]
