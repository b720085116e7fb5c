"""Graphs of spans: declaring generations, compiling, and running them."""

from ._compile import SpanGraph, compile
from ._declare import generate
from ._errors import NodeFailedError
from ._policy import RetryPolicy
from ._run import NodeOutcome, Run, arun, run
from ._task import Task, task

__all__ = [
    "NodeFailedError",
    "NodeOutcome",
    "RetryPolicy",
    "Run",
    "SpanGraph",
    "Task",
    "arun",
    "compile",
    "generate",
    "run",
    "task",
]
