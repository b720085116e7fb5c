"""Drawing with graphviz: the LogDAG, and the shared file/notebook helpers.

Large runs stay readable: more than ``COLLAPSE_THRESHOLD`` sibling nodes
(same kind, name and status, same upstream and downstream) are drawn as one
group node labelled with their count, and the label says it is collapsed.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import graphviz

if TYPE_CHECKING:
    from ._logdag import LogDAG, LogNode

#: Sibling groups larger than this are drawn as one counted node.
COLLAPSE_THRESHOLD = 12

STATUS_COLOURS = {
    "done": "#b7e1b0",
    "failed": "#f4a6a6",
    "retried": "#ffe08a",
    "skipped": "#e0e0e0",
    "cancelled": "#f6c89f",
}


def mimebundle(dot: graphviz.Digraph) -> dict[str, str]:
    """SVG for notebooks, or the DOT source as text when the ``dot`` program is missing."""
    try:
        svg = dot.pipe(format="svg").decode()
    except graphviz.ExecutableNotFound:
        return {"text/plain": dot.source}
    return {"image/svg+xml": svg, "text/plain": f"<graph: {len(dot.body)} statements>"}


def render_file(dot: graphviz.Digraph, path: pathlib.Path, fmt: str = "svg") -> pathlib.Path:
    """Write ``dot`` as ``fmt``; without ``dot``, write the DOT source beside it instead."""
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"format must be svg, png or pdf, got {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data: bytes = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot.source)
        return fallback
    path.write_bytes(data)
    return path


def _label(node: LogNode, timings: bool) -> str:
    lines = [node.label]
    if node.model:
        lines.append(node.model)
    details = []
    if timings:
        details.append(f"{node.duration * 1000:.0f} ms")
    tokens = node.input_tokens + node.output_tokens
    if tokens:
        details.append(f"{tokens} tok")
    if node.cache_hit:
        details.append("cache hit ✓")
    if node.attempt > 1:
        details.append(f"attempt {node.attempt}")
    if details:
        lines.append(" · ".join(details))
    if node.status not in ("done",):
        lines.append(node.status)
    return "\n".join(lines)


def logdag_to_graphviz(
    dag: LogDAG,
    *,
    timings: bool = True,
    collapse: int = COLLAPSE_THRESHOLD,
    rankdir: str = "LR",
    critical_path: bool = True,
) -> graphviz.Digraph:
    """Style: ``timings`` (durations in labels), ``collapse`` (sibling group size
    drawn as one node), ``rankdir``, ``critical_path`` (highlight it)."""
    dot = graphviz.Digraph("logdag", graph_attr={"rankdir": rankdir, "fontname": "Helvetica"})
    dot.attr("node", fontname="Helvetica", fontsize="10", style="filled", shape="box")
    dot.attr("edge", color="#777777", arrowsize="0.6", fontsize="8")
    critical = {n.key for n in dag.critical_path()} if critical_path else set()
    ups: dict[str, list[str]] = defaultdict(list)
    downs: dict[str, list[str]] = defaultdict(list)
    for e in dag.edges:
        ups[e.target].append(e.source)
        downs[e.source].append(e.target)
    groups: dict[tuple[Any, ...], list[LogNode]] = defaultdict(list)
    for node in dag.nodes.values():
        signature = (
            node.kind,
            node.label,
            node.status,
            node.parent if node.kind != "generation" or node.parent else None,
            tuple(sorted(ups[node.key])),
            tuple(sorted(downs[node.key])),
        )
        groups[signature].append(node)
    drawn: dict[str, str] = {}  # span key → drawn node name
    clusters: dict[str, Any] = {}
    for members in groups.values():
        parent = members[0].parent
        target = dot
        if parent in dag.nodes and dag.nodes[parent].kind == "sampler":
            if parent not in clusters:
                clusters[parent] = graphviz.Digraph(
                    f"cluster_{parent}",
                    graph_attr={"label": f"{dag.nodes[parent].name} attempts", "style": "dashed"},
                )
            target = clusters[parent]
        if len(members) > collapse:
            name = f"g_{members[0].key}"
            first = members[0]
            tokens = sum(m.input_tokens + m.output_tokens for m in members)
            label = f"{len(members)}× {first.label}\n{tokens} tok · collapsed ({first.status})"
            target.node(
                name,
                label,
                fillcolor=STATUS_COLOURS.get(first.status, "#ffffff"),
                shape="box3d",
                penwidth="2" if any(m.key in critical for m in members) else "1",
            )
            for m in members:
                drawn[m.key] = name
            continue
        for m in members:
            name = f"n_{m.key}"
            drawn[m.key] = name
            target.node(
                name,
                _label(m, timings),
                fillcolor=STATUS_COLOURS.get(m.status, "#ffffff"),
                shape="ellipse" if m.kind == "generation" else "box",
                color="#c0392b" if m.key in critical else "#333333",
                penwidth="2.5" if m.key in critical else "1",
            )
    for cluster in clusters.values():
        dot.subgraph(cluster)
    seen: set[tuple[str, str, str]] = set()
    for e in dag.edges:
        a, b = drawn[e.source], drawn[e.target]
        key = (a, b, e.kind)
        if a == b or key in seen:
            continue
        seen.add(key)
        on_path = e.source in critical and e.target in critical
        attrs = {"color": "#c0392b", "penwidth": "2.5"} if on_path else {}
        if e.kind != "part":
            attrs["label"] = e.kind
            attrs["style"] = "dashed"
        dot.edge(a, b, **attrs)
    return dot
