"""Graphs of spans: declaring generations, compiling, and running them."""

from ._compile import NodeInfo, SpanGraph, compile
from ._declare import generate

__all__ = ["NodeInfo", "SpanGraph", "compile", "generate"]
