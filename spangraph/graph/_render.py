"""Drawing a ``SpanGraph`` with graphviz (DOT source when ``dot`` is missing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import graphviz

from ..tracing._internal import mimebundle as mimebundle
from ..tracing._internal import render_file as render_file
from ..tracing._internal import wrap_label

if TYPE_CHECKING:
    from ._compile import SpanGraph

_STYLE: dict[str, dict[str, str]] = {
    "block": {"shape": "note", "style": "filled", "fillcolor": "#f2f2f2", "fontsize": "10"},
    "cached-block": {"shape": "note", "style": "filled", "fillcolor": "#ffe08a", "fontsize": "10"},
    "component": {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbe9f6"},
    "generation": {"shape": "ellipse", "style": "filled,bold", "fillcolor": "#b7e1b0"},
    "task": {"shape": "hexagon", "style": "filled", "fillcolor": "#f6d5b5"},
    "tool": {"shape": "cds", "style": "filled", "fillcolor": "#c9b8e8"},
}


def graph_to_graphviz(graph: SpanGraph, **graph_attr: str) -> graphviz.Digraph:
    dot = graphviz.Digraph("spangraph", graph_attr={"rankdir": "BT", **graph_attr})
    dot.attr("node", fontname="Helvetica")
    dot.attr("edge", color="#777777", arrowsize="0.6")
    for info in graph.nodes():
        style = info.kind
        if info.kind == "block" and getattr(info.span, "cache", False):
            style = "cached-block"
        dot.node(info.id[:12], "\\n".join(wrap_label(info.label)), **_STYLE.get(style, {}))
    for info in graph.nodes():
        for src in info.inputs:
            dot.edge(src[:12], info.id[:12])
    return dot
