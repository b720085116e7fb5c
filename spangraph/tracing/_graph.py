"""What a node's span says about its node, read from the graph the run executes.

``tracing/`` does not import ``graph/`` (the dependency runs the other way):
a traced run hands its tracer a ``TracedGraph``, which ``graph/`` implements
over the compiled ``SpanGraph``. Once per span, when the node's attempt has
ended (so the spans a task returned are known), ``NodeFacts.of`` reads from
it what the span states about its node:

- ``kind`` and ``label``: the user's ``label=``, else the producer's
  structural label (``generate(Answer)``), with a hint of the node's content
  (a parameter, the first words of its leading text) only when the run
  captures content (``nodes._label``);
- ``path``, the end of the node's span path (``TRACE_PATH_CHARS``);
- ``upstream``, the nearest *executed* nodes above it (generations, tasks,
  samplers: the nodes that have spans), reached through the pure nodes in
  between (blocks, components), and ``upstream_kinds``, the kind of each of
  those edges: ``part``, or ``dynamic`` for what a task returned. They
  become the span's links and its ``spangraph.node.upstream`` attributes;
- ``sampler``, the sampler a node is an attempt of (only for nodes that are
  not in the graph: see ``NodeFacts.declared``).

The upstream walk (``upstream``) is depth-first: from the node's last input
back to its first (dynamic inputs before parts), into each pure node's own
inputs before going on; every node is visited once, and an executed node
is listed where it is first met. Worked example::

    src = generate(A)
    mid = generate(B(x=src))
    top = generate(C(a=mid, b=D(c=src), d=CBlock("note")))

``top``'s only input is the component ``C``; ``C``'s inputs, last first,
are the block (a leaf: nothing above it), ``D`` (pure: its input ``src`` is
executed, so listed) and ``mid`` (executed, listed). So ``upstream`` is
``(src, mid)``, both ``part`` edges. ``mid`` is not walked past: its own
upstream is on its own span.

The usual node (a generation of a component whose parts are finished
thunks, blocks, or components of those) is at most two levels deep, and
``_producers`` gives its upstream with two plain loops; for a deeper node
it declines and the walk runs. ``test_upstream_fast_path_agrees_with_the_walk``
checks that the two agree (figures: ``docs/design/tracing.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..nodes._internal import WORK_KINDS

#: Span paths on spans keep their end only, at most this many characters after ``…``
#: (cut where a step starts): a node deep in a big graph has a path as long as the
#: graph is deep, and every span would carry it. About a dozen steps.
TRACE_PATH_CHARS = 160


class GraphNode(Protocol):
    """A node of the traced graph, as the upstream walk reads it."""

    @property
    def kind(self) -> str:
        """``generation``, ``task``, ``sampler`` (executed), ``block`` or ``component``."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The ids of its distinct parts, in order."""

    @property
    def dynamic_inputs(self) -> tuple[str, ...]:
        """The ids of the roots of the spans it (a task) returned, once it has run."""


class TracedGraph(Protocol):
    """The graph a traced run executes, as its tracer reads it (``graph/`` implements
    it over a ``SpanGraph``, one per run)."""

    @property
    def nodes(self) -> Mapping[str, GraphNode]:
        """Every node by id; it grows as the run adds the spans a task returns."""

    def label(self, node_id: str, captured: bool) -> str:
        """The label of an executed node's span; ``captured``: the run captures content,
        so the label may carry a hint of it."""

    def path_tail(self, node_id: str, limit: int) -> str:
        """The end of the node's span path: at most ``limit`` characters after ``…``,
        cut where a step starts."""

    # Content: read only for runs whose spans carry it (capture on: ``_text``).

    def task_values(self, node_id: str) -> tuple[Any, Any]:
        """A task's arguments (``(args, kwargs)``, each span in them as its value) and
        its result (``None`` until it has one)."""

    def tool_call(self, node_id: str) -> ToolFacts:
        """A tool node's call: the tool, the call's id, and (content, read only with
        capture on) its arguments and result or error."""

    def run_input(self) -> list[str]:
        """The text of every block the graph starts from (its leaves), in graph order."""

    def run_output(self) -> list[Any]:
        """Each root's value (``None`` for one that has none)."""


class ToolFacts(NamedTuple):
    """What a tool node's span says about its call (``TracedGraph.tool_call``)."""

    name: str
    call_id: str
    arguments: Any = None
    result: Any = None
    #: The error the tool raised or its arguments' validation (``None``: none).
    error: str | None = None
    error_type: str | None = None


@dataclass(slots=True)
class NodeFacts:
    """What a node's span says about the node besides how its attempt went (the
    module docstring tells where each comes from).

    Made by its two named constructors, ``of`` (from the graph) and ``declared``
    (every field by keyword), which call the class positionally: a class called
    with keywords builds a dict of them first, and a traced run makes one per span."""

    kind: str
    path: str
    label: str
    upstream: tuple[str, ...]
    upstream_kinds: tuple[str, ...]
    sampler: str | None = None

    @classmethod
    def of(cls, graph: TracedGraph, node_id: str, *, captured: bool = False) -> NodeFacts:
        """The facts of a node of ``graph`` (``captured``: the run captures content)."""
        nodes = graph.nodes
        node = nodes[node_id]
        ids = None if node.dynamic_inputs else _producers(nodes, node.inputs)
        if ids is None:
            ids, kinds = upstream(nodes, node)
        else:
            kinds = _all_parts(len(ids))
        path = graph.path_tail(node_id, TRACE_PATH_CHARS)
        return cls(node.kind, path, graph.label(node_id, captured), ids, kinds)

    @classmethod
    def declared(
        cls,
        *,
        kind: str,
        path: str,
        label: str,
        sampler: str | None,
        upstream: tuple[str, ...] = (),
    ) -> NodeFacts:
        """The facts of a node that is not in the graph (a sampler's attempt, a judge
        call: ``NodeDeclared``); its sampler's span is its parent. Its upstream is what
        it declared (a judge call's: the attempt it judges, a ``judge`` edge)."""
        return cls(kind, path, label, upstream, ("judge",) * len(upstream), sampler)


def upstream(
    nodes: Mapping[str, GraphNode], node: GraphNode
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The nearest executed nodes upstream of ``node`` and the kind of each edge (the
    walk the module docstring describes: the reference for ``_producers``)."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    stack = [(reversed(node.inputs), "part")]
    if node.dynamic_inputs:
        stack.append((reversed(node.dynamic_inputs), "dynamic"))
    while stack:
        sources, kind = stack[-1]
        for src in sources:
            if src in seen:
                continue
            seen.add(src)
            source = nodes[src]
            if source.kind in WORK_KINDS:
                out[src] = kind
            elif source.inputs:
                stack.append((reversed(source.inputs), kind))
                break  # its inputs first; this iterator resumes after them
        else:
            stack.pop()
    return tuple(out), tuple(out.values())


def _producers(nodes: Mapping[str, GraphNode], inputs: tuple[str, ...]) -> tuple[str, ...] | None:
    """``upstream``'s ids for a node whose inputs are executed nodes and pure nodes
    whose own inputs are executed nodes or leaves (the usual node): the same walk,
    two levels deep, every edge a ``part``. ``None`` for a deeper node."""
    out: dict[str, None] = {}
    for src in reversed(inputs):
        source = nodes[src]
        if source.kind in WORK_KINDS:
            out[src] = None
            continue
        for part in reversed(source.inputs):
            below = nodes[part]
            if below.kind in WORK_KINDS:
                out[part] = None
            elif below.inputs:
                return None
    return tuple(out)


#: ``_all_parts(n)`` for small ``n``: one tuple shared by every span with ``n`` parts.
_ALL_PARTS = tuple(("part",) * n for n in range(16))


def _all_parts(count: int) -> tuple[str, ...]:
    """The edge kinds of ``count`` upstream edges that are all parts."""
    return _ALL_PARTS[count] if count < len(_ALL_PARTS) else ("part",) * count
