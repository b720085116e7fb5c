"""Graphs of spans: declaring generations, compiling, and running them."""

import typing as _typing

from ._compile import SpanGraph as SpanGraph
from ._compile import compile as compile
from ._declare import ask as ask
from ._declare import generate as generate
from ._errors import NodeFailedError as NodeFailedError
from ._executor import Executor as Executor
from ._interrupt import Interrupt as Interrupt
from ._interrupt import InterruptError as InterruptError
from ._interrupt import interrupt as interrupt
from ._policy import RetryPolicy as RetryPolicy
from ._run import NodeOutcome as NodeOutcome
from ._run import Run as Run
from ._run import arun as arun
from ._run import run as run
from ._stream import arun_stream as arun_stream
from ._task import Task as Task
from ._task import task as task
from ._tools import Tool as Tool
from ._tools import ToolArgumentsError as ToolArgumentsError
from ._tools import ToolCall as ToolCall
from ._tools import ToolCallError as ToolCallError
from ._tools import ToolDefinitionError as ToolDefinitionError
from ._tools import ToolError as ToolError
from ._tools import ToolOutcome as ToolOutcome
from ._tools import ToolRound as ToolRound
from ._tools import ToolRoundsError as ToolRoundsError
from ._tools import UnknownToolError as UnknownToolError
from ._tools import tool as tool

#: Whether runs freeze the garbage collector's heap while they execute (``gc.freeze``):
#: faster big traced runs, at the cost of keeping the process's garbage cycles until
#: the run ends. Off by default; see ``spangraph.graph._gcfreeze`` for when to set it.
freeze_gc = False

if _typing.TYPE_CHECKING:
    from ._dask import DaskExecutor as DaskExecutor


def __getattr__(name: str) -> _typing.Any:
    if name == "DaskExecutor":  # imported on first use: Dask is an extra, and heavy
        try:
            from ._dask import DaskExecutor
        except ImportError as exc:
            raise ImportError(
                f"DaskExecutor needs Dask distributed and msgpack ({exc}): "
                "pip install 'spangraph[dask]'"
            ) from None
        return DaskExecutor
    raise AttributeError(f"module 'spangraph.graph' has no attribute {name!r}")


__all__ = [
    "DaskExecutor",
    "Executor",
    "Interrupt",
    "InterruptError",
    "NodeFailedError",
    "NodeOutcome",
    "RetryPolicy",
    "Run",
    "SpanGraph",
    "Task",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallError",
    "ToolDefinitionError",
    "ToolError",
    "ToolOutcome",
    "ToolRound",
    "ToolRoundsError",
    "UnknownToolError",
    "arun",
    "arun_stream",
    "ask",
    "compile",
    "freeze_gc",
    "generate",
    "interrupt",
    "run",
    "task",
    "tool",
]
