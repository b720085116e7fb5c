"""Drawing with graphviz: the LogDAG, and the shared file/notebook helpers.

Large runs stay readable: more than ``COLLAPSE_THRESHOLD`` sibling nodes
(same kind, structural label and status, same upstream and downstream) are
drawn as one group node labelled with their count, and the label says it is
collapsed. A legend lists the styles the drawing uses.
"""

from __future__ import annotations

import html
import itertools
import pathlib
import textwrap
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import graphviz

from ..nodes._internal import shorten, structural_part
from . import _semconv as sc

if TYPE_CHECKING:
    from ._logdag import LogDAG, LogNode

#: Sibling groups larger than this are drawn as one counted node.
COLLAPSE_THRESHOLD = 12

#: Node fills: a status, or ``rejected`` (a sampler's attempt that failed validation).
STATUS_COLOURS = {
    "done": "#b7e1b0",
    "failed": "#f4a6a6",
    "retried": "#ffe08a",
    "skipped": "#e0e0e0",
    "cancelled": "#f6c89f",
    "interrupted": "#9fd3f6",
    "rejected": "#d7c4ef",
}
#: A node's shape by kind (a box for the others: tasks, samplers).
_SHAPES = {"generation": "ellipse", "tool": "cds"}
#: The outline of the attempt a sampler chose, and of the critical path.
CHOSEN_COLOUR = "#1e6b30"
CRITICAL_COLOUR = "#c0392b"


def mimebundle(dot: graphviz.Digraph) -> dict[str, str]:
    """SVG for notebooks, or the DOT source as text when the ``dot`` program is missing."""
    try:
        svg = dot.pipe(format="svg").decode()
    except graphviz.ExecutableNotFound:
        return {"text/plain": dot.source}
    return {"image/svg+xml": svg, "text/plain": f"<graph: {len(dot.body)} statements>"}


#: What ``render`` writes: graphviz's output formats, and ``dot`` (the DOT source).
FORMATS = ("svg", "png", "pdf", "dot")


def render_file(dot: graphviz.Digraph, path: pathlib.Path, fmt: str | None = None) -> pathlib.Path:
    """Write ``dot`` to ``path`` as ``fmt`` (one of ``FORMATS``; ``None``: from the
    path's suffix, else ``svg``). ``dot`` writes the DOT source and needs no
    graphviz program; without one, the other formats write the DOT source beside
    ``path`` instead (with the suffix ``.dot``), and that path is returned."""
    if fmt is None:
        suffix = path.suffix.lower().lstrip(".")
        fmt = suffix if suffix in FORMATS else "svg"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        path.write_text(dot.source)
        return path
    try:
        data: bytes = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot.source)
        return fallback
    path.write_bytes(data)
    return path


def wrap_label(label: str, width: int = 34) -> list[str]:
    """A label's lines: its structural part, then its hint (``nodes._label``), each
    wrapped at ``width`` characters."""
    base = structural_part(label)
    lines = textwrap.wrap(base, width) or [base]
    if len(base) < len(label):
        lines.extend(textwrap.wrap(label[len(base) :].strip(), width))
    return lines


def attempt_mark(node: LogNode) -> str | None:
    """A sampler attempt's mark: ``chosen``, ``passed`` or ``rejected`` (it failed
    validation); ``None`` for a node that is no validated or chosen attempt."""
    a = node.attributes
    if a.get(sc.SAMPLE_CHOSEN) is True:
        return "chosen"
    passed = a.get(sc.VALIDATION_PASSED)
    if passed is None:
        return None
    return "passed" if passed else "rejected"


def _fill(node: LogNode) -> str:
    if node.status == "done" and node.attributes.get(sc.VALIDATION_PASSED) is False:
        return STATUS_COLOURS["rejected"]
    return STATUS_COLOURS.get(node.status, "#ffffff")


def _label(node: LogNode, timings: bool) -> str:
    lines = wrap_label(node.label)
    if node.model:
        lines.append(node.model)
    details = []
    if timings:
        details.append(f"{node.duration * 1000:.0f} ms")
    tokens = node.input_tokens + node.output_tokens
    if tokens:
        details.append(f"{tokens} tok")
    if node.cached_tokens and not node.cache_hit:
        details.append(f"KV {node.cached_tokens} tok")
    if node.cache_hit:
        details.append("cache hit ✓")
    if node.attempt > 1:
        details.append(f"attempt {node.attempt}")
    if details:
        lines.append(" · ".join(details))
    marks = []
    mark = attempt_mark(node)
    if mark is not None:
        marks.append(mark)
        passed = node.attributes.get(sc.VALIDATION_PASSED)
        if mark == "chosen" and passed is not None:
            marks.append("passed" if passed else "rejected: none passed")
    score = node.attributes.get(sc.SAMPLE_SCORE)
    if isinstance(score, int | float):
        marks.append(f"score {score:g}")
    if marks:
        lines.append(" · ".join(marks))
    # Present only when the run captured content (else only its length and digest are).
    reason = node.attributes.get(sc.VALIDATION_REASON)
    if reason:
        lines.extend(textwrap.wrap(shorten(str(reason), 80), 40))
    if node.status not in ("done",):
        lines.append(node.status)
    return "\\n".join(lines)


#: The legend's entries, in the order it lists them: a key, what it says, how it looks.
_LEGEND_FILLS = (
    ("done", "done"),
    ("failed", "failed"),
    ("retried", "retried (a later attempt follows)"),
    ("skipped", "skipped (an input failed)"),
    ("cancelled", "cancelled"),
    ("interrupted", "interrupted (waits for an answer: interrupt())"),
    ("rejected", "attempt rejected (failed validation)"),
)


#: What a dashed edge of each kind means (a solid edge is a data part).
_DASHED = {
    "sample": "sampler to its attempt",
    "judge": "attempt to its judge",
    "retry": "failed attempt to its retry",
    "dynamic": "task to the spans it returned",
}


def _legend(dot: graphviz.Digraph, used: set[str]) -> None:
    """A legend node (an HTML table) with an entry for each style the drawing uses."""
    rows = []
    for key, text in _LEGEND_FILLS:
        if key in used:
            rows.append(_legend_row(f'BGCOLOR="{STATUS_COLOURS[key]}"', "", text))
    if "chosen" in used:
        rows.append(
            _legend_row(
                f'BGCOLOR="{STATUS_COLOURS["done"]}" BORDER="3" COLOR="{CHOSEN_COLOUR}"',
                "",
                "attempt the sampler chose",
            )
        )
    if "cache hit" in used:
        rows.append(
            _legend_row('BORDER="1"', "✓", "cache hit (double outline): output from the span cache")
        )
    if "kv" in used:
        rows.append(
            _legend_row('BORDER="1"', "KV", "KV n tok: prompt tokens reused from a cached prefix")
        )
    if "critical" in used:
        rows.append(
            _legend_row(
                f'BORDER="3" COLOR="{CRITICAL_COLOUR}"', "", "critical path (longest chain)"
            )
        )
    kinds = [text for kind, text in _DASHED.items() if f"edge:{kind}" in used]
    if kinds:
        rows.append(_legend_row('BORDER="0"', "- - ›", "; ".join(kinds)))
    if "ellipse" in used:
        rows.append(_legend_row('BORDER="0"', "( )", "generation (box: task, sampler)"))
    if "tool" in used:
        rows.append(_legend_row('BORDER="0"', "▭›", "tool call (execute_tool)"))
    if not rows:
        return
    table = (
        '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="4" CELLPADDING="2" COLOR="#999999">'
        '<TR><TD COLSPAN="2" ALIGN="LEFT"><B>Legend</B></TD></TR>' + "".join(rows) + "</TABLE>>"
    )
    with dot.subgraph(name="legend_rank") as sink:
        sink.attr(rank="sink")
        sink.node("legend", table, shape="plaintext", style="", fontsize="9")


def _legend_row(swatch: str, sign: str, text: str) -> str:
    return (
        f'<TR><TD {swatch} WIDTH="22" FIXEDSIZE="FALSE">{html.escape(sign)}</TD>'
        f'<TD ALIGN="LEFT">{html.escape(text)}</TD></TR>'
    )


def logdag_to_graphviz(
    dag: LogDAG,
    *,
    timings: bool = True,
    collapse: int = COLLAPSE_THRESHOLD,
    rankdir: str = "LR",
    critical_path: bool = True,
    legend: bool = True,
) -> graphviz.Digraph:
    """Style: ``timings`` (durations in labels), ``collapse`` (sibling group size
    drawn as one node), ``rankdir``, ``critical_path`` (highlight it), ``legend`` (a
    key to the styles the drawing uses).

    What a node shows: its label (``spangraph.node.label``: the user's, or
    structural with a content hint only when the run captured content), model,
    duration, tokens, KV-cached prompt tokens, cache hit, retry attempt; for a
    sampler's attempt, ``passed``, ``rejected`` or ``chosen`` and its score, and
    the validation reason only when the run captured content. Fill: status
    (a done attempt that failed validation: ``rejected``)."""
    dot = graphviz.Digraph("logdag", graph_attr={"rankdir": rankdir, "fontname": "Helvetica"})
    dot.attr("node", fontname="Helvetica", fontsize="10", style="filled", shape="box")
    dot.attr("edge", color="#777777", arrowsize="0.6", fontsize="8", fontname="Helvetica")
    chain = dag.critical_path() if critical_path else []
    critical = {n.key for n in chain}
    # The chain's own edges: two of its nodes may have an edge that skips between them.
    critical_edges = {(a.key, b.key) for a, b in itertools.pairwise(chain)}
    used: set[str] = {"critical"} if critical else set()
    ups: dict[str, list[str]] = defaultdict(list)
    downs: dict[str, list[str]] = defaultdict(list)
    for e in dag.edges:
        ups[e.target].append(e.source)
        downs[e.source].append(e.target)
    groups: dict[tuple[Any, ...], list[LogNode]] = defaultdict(list)
    for node in dag.nodes.values():
        signature = (
            node.kind,
            structural_part(node.label),
            node.status,
            attempt_mark(node),
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
                    graph_attr={
                        "label": f"{dag.nodes[parent].label} attempts",
                        "style": "dashed",
                    },
                )
            target = clusters[parent]
        if len(members) > collapse:
            name = f"g_{members[0].key}"
            first = members[0]
            tokens = sum(m.input_tokens + m.output_tokens for m in members)
            base = structural_part(first.label)
            label = f"{len(members)}× {base}\\n{tokens} tok · collapsed ({first.status})"
            used.add("rejected" if _fill(first) == STATUS_COLOURS["rejected"] else first.status)
            target.node(
                name,
                label,
                fillcolor=_fill(first),
                shape="box3d",
                penwidth="2" if any(m.key in critical for m in members) else "1",
            )
            for m in members:
                drawn[m.key] = name
            continue
        for m in members:
            name = f"n_{m.key}"
            drawn[m.key] = name
            fill = _fill(m)
            used.add("rejected" if fill == STATUS_COLOURS["rejected"] else m.status)
            attrs = {
                "fillcolor": fill,
                "shape": _SHAPES.get(m.kind, "box"),
                "color": "#333333",
                "penwidth": "1",
            }
            if m.kind == "generation":
                used.add("ellipse")
            if m.kind == "tool":
                used.add("tool")
            if attempt_mark(m) == "chosen":
                attrs.update(color=CHOSEN_COLOUR, penwidth="3")
                used.add("chosen")
            if m.key in critical:
                attrs.update(color=CRITICAL_COLOUR, penwidth="2.5")
            if m.cache_hit:
                attrs["peripheries"] = "2"
                used.add("cache hit")
            elif m.cached_tokens:
                used.add("kv")
            target.node(name, _label(m, timings), **attrs)
    for cluster in clusters.values():
        dot.subgraph(cluster)
    # A judge call hangs off the attempt it judged; its sampler edge would only cross.
    judged = {e.target for e in dag.edges if e.kind == "judge"}
    seen: set[tuple[str, str, str]] = set()
    for e in dag.edges:
        a, b = drawn[e.source], drawn[e.target]
        key = (a, b, e.kind)
        if a == b or key in seen or (e.kind == "sample" and e.target in judged):
            continue
        seen.add(key)
        on_path = (e.source, e.target) in critical_edges
        attrs = {"color": CRITICAL_COLOUR, "penwidth": "2.5"} if on_path else {}
        if e.kind != "part":
            attrs["label"] = e.kind
            attrs["style"] = "dashed"
            used.add(f"edge:{e.kind}")
        dot.edge(a, b, **attrs)
    if legend:
        _legend(dot, used)
    return dot
