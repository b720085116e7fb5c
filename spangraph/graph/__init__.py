"""Graphs of spans: declaring generations, compiling, and running them."""

from ._compile import SpanGraph, compile
from ._declare import generate
from ._errors import NodeFailedError
from ._policy import RetryPolicy
from ._run import NodeOutcome, Run, arun, run
from ._task import Task, task

#: Whether runs freeze the garbage collector's heap while they execute (``gc.freeze``):
#: faster big traced runs, at the cost of keeping the process's garbage cycles until
#: the run ends. Off by default; see ``spangraph.graph._gcfreeze`` for when to set it.
freeze_gc = False

__all__ = [
    "NodeFailedError",
    "NodeOutcome",
    "RetryPolicy",
    "Run",
    "SpanGraph",
    "Task",
    "arun",
    "compile",
    "freeze_gc",
    "generate",
    "run",
    "task",
]
