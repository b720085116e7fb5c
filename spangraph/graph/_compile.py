"""``compile()``: walk spans' ``parts()`` into a ``SpanGraph``.

Node ids are content digests (see ``spangraph.nodes._digest``), so equal
subtrees collapse into one node. Edges point from a part to the span that
uses it, the direction data flows. The walk is an iterative depth-first
search: nodes are recorded in post-order, which is a topological order
(every part before its users) and deterministic for the same roots.
"""

from __future__ import annotations

import gc
import operator
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..nodes import ModelOutputThunk, SpanError
from ..nodes._internal import (
    WORK_KINDS,
    PathTracker,
    SpanIds,
    TailMemo,
    cached_id,
    display_label,
    fresh_copies,
    node_kind,
    span_label,
    walk_ids,
)
from ..tracing._internal import capture_mode

#: Whether a thunk is claimed, by a run or by whoever declared it (``SpanGraph.held``).
_claimed = operator.attrgetter("_claimed")

# A node's status in a run (the scheduler keeps it, apart from the graph).
PENDING, READY, RUNNING, DONE, FAILED, SKIPPED, CANCELLED, INTERRUPTED = (
    "pending",
    "ready",
    "running",
    "done",
    "failed",
    "skipped",
    "cancelled",
    "interrupted",
)


@dataclass(slots=True)
class NodeInfo:
    """One node of a ``SpanGraph``."""

    id: str
    kind: str
    span: Any
    frame: int
    #: Ids of the distinct parts, in order (the node's inputs).
    inputs: tuple[str, ...] = ()
    #: Every thunk object that stands for this node (equal declarations share a node).
    thunks: list[ModelOutputThunk[Any]] = field(default_factory=list)
    #: Roots of the spans this (task) node returned at run time.
    dynamic_inputs: tuple[str, ...] = ()
    # Set by compile(): the nodes that have this one as an input, the node's position
    # in the graph's order, and whether it is work (a generation, task or sampler).
    _users: list[NodeInfo] = field(default_factory=list, init=False, repr=False, compare=False)
    _order: int = field(default=0, init=False, repr=False, compare=False)
    _work: bool = field(default=False, init=False, repr=False, compare=False)
    #: More than one thunk stands for this node (``thunks[1:]`` are aliases).
    _aliased: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        return node_label(self.span, self.kind)


def node_label(span: Any, kind: str) -> str:
    """A node's label in drawings: the user's ``label=``, else its class or producer,
    with a hint of its content only when content capture is on
    (``spangraph.tracing.capture_content``), like the run's spans (``nodes._label``)."""
    return display_label(span, captured=capture_mode() == "SPAN_ONLY")


class SpanGraph:
    """A compiled graph of spans (``compile()`` makes it; ``run()`` runs it).

    ``graph`` is the ``networkx.DiGraph`` (edges run from a part to the span
    that uses it; node ids are content ids); ``generations()`` lists the
    generation nodes; ``id_of(span)`` and ``path_of(node_id)`` find a node and
    the span path it was reached by. It draws itself: ``render(path)``, and as
    SVG in a notebook. A compiled graph is a value: two runs of it never meet.
    """

    def __init__(
        self,
        nodes: dict[str, NodeInfo],
        roots: Sequence[str],
        paths: PathTracker,
        root_spans: Sequence[Any],
    ) -> None:
        self._nodes = nodes
        self._graph: nx.DiGraph | None = None
        self._users: dict[str, list[str]] | None = None
        self.roots = list(roots)
        self.root_spans = list(root_spans)
        self._paths = paths
        #: How many runs are executing this graph now (each keeps its own state; a run
        #: started while another holds the graph runs on a copy: see ``instance``).
        self._running = 0
        # What a run whose work is all to do starts from (Scheduler._take_fresh): each
        # node's count of inputs, by position, and the positions of the nodes without
        # inputs (ready at once). Dynamic nodes are not counted here.
        self._input_counts: list[int] = [len(info.inputs) for info in nodes.values()]
        self._leaves: list[int] = [info._order for info in nodes.values() if not info.inputs]
        #: The thunks of work nodes (each node's first), and whether any node has more.
        self._work_thunks: list[ModelOutputThunk[Any]] = []
        self._aliased = False
        for info in nodes.values():
            if info._work:
                self._work_thunks.append(info.thunks[0])
                self._aliased = self._aliased or info._aliased

    @property
    def graph(self) -> nx.DiGraph:
        """The graph as a ``networkx.DiGraph`` (edges run from a part to its user).

        Built on first use: the scheduler works from each node's ``inputs``,
        so runs that never ask for networkx never pay for building it.
        """
        if self._graph is None:
            graph = nx.DiGraph()
            graph.add_nodes_from(
                (n.id, {"kind": n.kind, "label": n.label}) for n in self._nodes.values()
            )
            graph.add_edges_from(
                ((src, n.id) for n in self._nodes.values() for src in n.inputs), kind="part"
            )
            graph.add_edges_from(
                ((src, n.id) for n in self._nodes.values() for src in n.dynamic_inputs),
                kind="dynamic",
            )
            self._graph = graph
        return self._graph

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __getitem__(self, node_id: str) -> NodeInfo:
        return self._nodes[node_id]

    def nodes(self) -> Iterable[NodeInfo]:
        return self._nodes.values()

    def topological_order(self) -> list[str]:
        """Node ids with every part before the spans that use it (deterministic)."""
        return list(self._nodes)

    def generations(self) -> list[str]:
        """Ids of the generation nodes, in topological order."""
        return [n.id for n in self._nodes.values() if n.kind == "generation"]

    def id_of(self, span: Any) -> str:
        """The node id of ``span`` (which must be in the graph)."""
        node_id = cached_id(span)
        if node_id is None:
            from ..nodes._internal import span_id

            node_id = span_id(span)
        if node_id not in self._nodes:
            raise KeyError(f"{span_label(span)} is not in this graph")
        return node_id

    def node(self, span_or_id: Any) -> NodeInfo:
        """Look a node up by span or by id."""
        if isinstance(span_or_id, str) and span_or_id in self._nodes:
            return self._nodes[span_or_id]
        return self._nodes[self.id_of(span_or_id)]

    def path_of(self, node_id: str, limit: int | None = None) -> str:
        """The span path by which the node was first reached from a root (with
        ``limit``, its last ``limit`` steps: deep graphs have long paths)."""
        return self._paths.path(self._nodes[node_id].frame, limit)

    def path_tail(self, node_id: str, limit: int, memo: TailMemo) -> str:
        """The end of the node's span path, at most ``limit`` characters after ``…``
        (``cut_path(path_of(node_id), limit)``), sharing the work between nodes through
        ``memo`` (one per run: it holds the tail of every frame walked)."""
        return self._paths.tail(self._nodes[node_id].frame, limit, memo)

    def held(self) -> bool:
        """Whether a run holds this graph now: runs it, or holds thunks of it (a graph
        compiled from the same spans is running)."""
        if self._running:
            return True
        thunks = self._work_thunks
        # A thunk no run has claimed is held by none: when none is claimed (the usual
        # case), that is found without a Python loop over the graph.
        if not any(map(_claimed, thunks)):
            return False
        return any(not thunk.state.finished for thunk in thunks if thunk._claimed)

    def instance(self) -> SpanGraph:
        """The same program with thunks of its own (``nodes/_copy.py``): what a run
        started while another holds this graph runs, so that the two never meet.
        Node ids are equal; results done before are kept."""
        return compile(*fresh_copies(self.root_spans))

    def inputs(self, node_id: str) -> list[str]:
        return list(self._nodes[node_id].inputs)

    def extend(self, spans: Sequence[Any], *, parent: str) -> tuple[list[str], list[str]]:
        """Add spans a task returned at run time; return (their ids, the ids of new nodes).

        The new spans' paths start at the task that returned them, and their
        roots become dynamic inputs of that task (edge kind ``dynamic``).
        """
        before = len(self._nodes)
        prefix = f"{self.path_of(parent)}->"
        root_ids = _walk(spans, self._nodes, self._paths, prefix)
        new_ids = list(self._nodes)[before:]
        info = self._nodes[parent]
        info.dynamic_inputs = tuple(dict.fromkeys((*info.dynamic_inputs, *root_ids)))
        self._graph = None
        self._users = None
        return root_ids, new_ids

    def users(self, node_id: str) -> list[str]:
        if self._users is None:
            users: dict[str, list[str]] = {n: [] for n in self._nodes}
            for info in self._nodes.values():
                for src in (*info.inputs, *info.dynamic_inputs):
                    users[src].append(info.id)
            self._users = users
        return list(self._users[node_id])

    def downstream(self, node_id: str) -> set[str]:
        """Every node that (transitively) uses this one."""
        out: set[str] = set()
        todo = [node_id]
        while todo:
            for user in self.users(todo.pop()):
                if user not in out:
                    out.add(user)
                    todo.append(user)
        return out

    def render(self, path: str | os.PathLike[str], format: str | None = None) -> pathlib.Path:
        """Draw the graph to ``path`` and return the path written. ``format``: ``svg``,
        ``png``, ``pdf`` or ``dot`` (DOT source); by default the path's suffix says
        (else ``svg``). Without graphviz's ``dot`` program, the DOT source is written
        beside ``path`` (``.dot``) instead, as ``LogDAG.render`` does. Labels follow
        the content-capture rule of the run's spans (``generate(label=)``)."""
        from ._render import render_file

        return render_file(self.to_graphviz(), pathlib.Path(path), format)

    def to_graphviz(self, **graph_attr: str) -> Any:
        from ._render import graph_to_graphviz

        return graph_to_graphviz(self, **graph_attr)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ._render import mimebundle

        return mimebundle(self.to_graphviz())

    def __repr__(self) -> str:
        return f"<SpanGraph {len(self)} nodes, {len(self.generations())} generations>"


def compile(*roots: Any) -> SpanGraph:
    """Compile spans (and everything reachable through ``parts()``) into a ``SpanGraph``."""
    if not roots:
        raise ValueError("compile() needs at least one span")
    # The walk allocates many small, acyclic objects; letting the cyclic GC
    # rescan the growing heap meanwhile makes big graphs cost superlinearly.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _compile(roots)
    finally:
        if collecting:
            gc.enable()


def _compile(roots: Sequence[Any]) -> SpanGraph:
    paths = PathTracker()
    nodes: dict[str, NodeInfo] = {}
    root_ids = _walk(roots, nodes, paths, "")
    return SpanGraph(nodes, root_ids, paths, roots)


def _walk(
    roots: Sequence[Any], nodes: dict[str, NodeInfo], paths: PathTracker, prefix: str
) -> list[str]:
    """Add ``roots`` and everything below them to ``nodes``; return the roots' ids.

    The walk is the content-id walk (``walk_ids``), which calls ``add`` for each
    span in post-order, so ``nodes`` is in a topological order. It does not go
    below a span whose id is already a node: that span is an alias of the node.
    """
    ids = SpanIds()

    def known(span: Any) -> str | None:
        node_id = cached_id(span)
        if node_id is None or node_id not in nodes:
            return None
        _alias(nodes[node_id], span)
        return node_id

    def add(span: Any, node_id: str, frame: int, part_ids: list[str]) -> None:
        existing = nodes.get(node_id)
        if existing is not None:
            _alias(existing, span)
            return
        inputs = tuple(dict.fromkeys(part_ids)) if len(part_ids) > 1 else tuple(part_ids)
        info = NodeInfo(node_id, node_kind(span), span, frame, inputs)
        if isinstance(span, ModelOutputThunk):
            info.thunks.append(span)
            info._work = info.kind in WORK_KINDS
        for src in inputs:
            nodes[src]._users.append(info)
        info._order = len(nodes)
        nodes[node_id] = info

    root_ids: list[str] = []
    for index, root in enumerate(roots):
        label = span_label(root) if len(roots) == 1 else f"roots[{index}]:{span_label(root)}"
        label = prefix + label
        try:
            found = ids.get(id(root)) or known(root)
        except SpanError as exc:  # a block's id, computed on first use, found it bad
            raise exc.at(label) from None
        if found is None:
            frame = paths.root(label)
            found = walk_ids(root, frame=frame, paths=paths, ids=ids, known=known, visit=add)
        root_ids.append(found)
    return root_ids


def _alias(info: NodeInfo, span: Any) -> None:
    if isinstance(span, ModelOutputThunk) and all(t is not span for t in info.thunks):
        info.thunks.append(span)
        info._aliased = len(info.thunks) > 1
