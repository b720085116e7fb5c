from __future__ import annotations

import builtins
import json
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spangraph import CBlock, Component, Span, compile, generate
from spangraph.nodes import (
    CycleError,
    MissingProducerError,
    ModelOutputThunk,
    NotASpanError,
    Prompt,
    render_span,
)


class Node(Component[str]):
    template = "{label}: {kids}"
    kids: list[Span]
    label: str = ""


class Report(Component[str]):
    template = "{a}\n{b}\n{c}"
    a: Span
    b: Span
    c: Span


# A random tree description: leaves are ("leaf", text), inner nodes ("node", label, children).
trees = st.recursive(
    st.tuples(st.just("leaf"), st.text(max_size=5)),
    lambda kids: st.tuples(st.just("node"), st.text(max_size=3), st.lists(kids, max_size=4)),
    max_leaves=25,
)


def build(desc: tuple) -> Span:  # type: ignore[type-arg]
    if desc[0] == "leaf":
        return CBlock(desc[1])
    return Node(kids=[build(k) for k in desc[2]], label=desc[1])


def ids_by_path(desc: tuple, span: object, path: str = "r") -> dict[str, str]:  # type: ignore[type-arg]
    from spangraph.lowlevel import span_id

    out = {path: span_id(span)}
    if desc[0] == "node":
        for i, (kd, ks) in enumerate(zip(desc[2], span.parts(), strict=True)):  # type: ignore[attr-defined]
            out.update(ids_by_path(kd, ks, f"{path}.{i}"))
    return out


@given(trees)
@settings(max_examples=60, deadline=None)
def test_equal_content_gives_equal_ids(desc: tuple) -> None:  # type: ignore[type-arg]
    assert ids_by_path(desc, build(desc)) == ids_by_path(desc, build(desc))


def mutate(desc: tuple, path: list[int], how: str) -> tuple:  # type: ignore[type-arg]
    if not path:
        if desc[0] == "leaf":
            return ("leaf", desc[1] + "!")
        return ("node", desc[1] + "!", desc[2]) if how == "param" else desc
    kids = list(desc[2])
    kids[path[0]] = mutate(kids[path[0]], path[1:], how)
    return ("node", desc[1], kids)


def paths_of(desc: tuple, prefix: list[int] | None = None) -> list[list[int]]:  # type: ignore[type-arg]
    prefix = prefix or []
    out = [prefix]
    if desc[0] == "node":
        for i, kid in enumerate(desc[2]):
            out.extend(paths_of(kid, [*prefix, i]))
    return out


@given(trees, st.data())
@settings(max_examples=60, deadline=None)
def test_a_change_changes_every_ancestor_and_nothing_else(desc: tuple, data: st.DataObject) -> None:  # type: ignore[type-arg]
    target = data.draw(st.sampled_from(paths_of(desc)))
    changed = mutate(desc, target, "param")
    before, after = ids_by_path(desc, build(desc)), ids_by_path(changed, build(changed))
    target_key = ".".join(["r", *map(str, target)])
    for key in before:
        is_ancestor_or_self = target_key == key or target_key.startswith(key + ".")
        if is_ancestor_or_self:
            assert before[key] != after[key], key
        elif before[key] != after[key]:
            # Only spans whose content equals the changed one's may change with it.
            assert before[key] == before[target_key], key


@given(trees)
@settings(max_examples=40, deadline=None)
def test_topological_order_respects_every_edge(desc: tuple) -> None:  # type: ignore[type-arg]
    g = compile(generate(build(desc)))
    order = {n: i for i, n in enumerate(g.topological_order())}
    assert set(order) == set(g.graph.nodes)
    for src, dst in g.graph.edges:
        assert order[src] < order[dst]
    assert nx.is_directed_acyclic_graph(g.graph)


SCRIPT = textwrap.dedent(
    """
    import json
    from spangraph import CBlock, Component, Span, compile, generate
    class Node(Component[str]):
        template = "{label}: {kids}"
        kids: list[Span]
        label: str = ""
    doc = CBlock("shared", cache=True)
    a = generate(Node(kids=[doc, "x"], label="a"))
    b = generate(Node(kids=[doc, a], label="b"), options={"temperature": 0})
    print(json.dumps(compile(b, a).topological_order()))
    """
)


def test_compile_is_deterministic_across_processes(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", SCRIPT], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(2)
    ]
    code = builtins.compile(SCRIPT, "<script>", "exec", dont_inherit=True)
    exec(code, {"__name__": "__main__"})  # the same classes, in this process
    here = json.loads(capsys.readouterr().out)
    assert runs[0] == runs[1] == here
    assert len(here) == 6  # doc, "x", two components, two generations


def test_equal_subtrees_are_one_node_and_equal_generations_share_it() -> None:
    doc = CBlock("doc", cache=True)
    t1, t2 = generate(Node(kids=[doc])), generate(Node(kids=[doc]))
    top = generate(Report(a=t1, b=t2, c=doc))
    g = compile(top)
    assert len(g.generations()) == 2
    assert g.id_of(t1) == g.id_of(t2)
    assert g.node(t1).thunks == [t1, t2]
    assert g.roots == [g.id_of(top)]
    assert g.path_of(g.id_of(doc)) == "generate(Report).action.parts()[0].action.parts()[0]"


def test_state_and_options_separate_generations() -> None:
    from spangraph.nodes import ExecutionState

    class S(ExecutionState):
        def fingerprint(self) -> str:
            return "S"

    action = Node(kids=["x"])
    ids = {
        compile(t).roots[0]
        for t in (
            generate(action),
            generate(action, state=S()),
            generate(action, options={"temperature": 0.5}),
            generate(action, sample_index=1),
        )
    }
    assert len(ids) == 4


def test_cycle_is_named() -> None:
    class Loop:
        def __init__(self) -> None:
            self.kids: list[object] = []

        def parts(self) -> list[object]:
            return self.kids

        def render(self) -> Prompt:
            return Prompt()

        def parse_output(self, text: str) -> str:
            return text

    a, b = Loop(), Loop()
    a.kids, b.kids = [CBlock("x"), b], [a]
    with pytest.raises(CycleError, match=r"cycle: Loop -> Loop -> Loop") as info:
        compile(Report(a="x", b=a, c="y"))  # type: ignore[arg-type]
    assert info.value.path == "Report.parts()[1].parts()[1].parts()[0]"


def test_part_that_is_not_a_span_names_path_and_type() -> None:
    class Bad:
        def parts(self) -> list[object]:
            return [CBlock("fine"), 3]

        def render(self) -> Prompt:
            return Prompt()

        def parse_output(self, text: str) -> str:
            return text

    with pytest.raises(NotASpanError, match=r"Report\.parts\(\)\[2\]\.parts\(\)\[1\]: int"):
        compile(Report(a="a", b="b", c=Bad()))  # type: ignore[arg-type]


def test_thunk_without_producer() -> None:
    with pytest.raises(MissingProducerError, match=r"Report\.parts\(\)\[0\]"):
        compile(Report(a=ModelOutputThunk(), b="b", c="c"))


def test_deep_nesting_does_not_recurse() -> None:
    span: Span = CBlock("leaf")
    for i in range(10_000):
        span = Node(kids=[span], label=str(i % 7))
    g = compile(span)
    assert len(g) == 10_001
    prompt = render_span(span)
    assert prompt.text.endswith("leaf")
    assert prompt.text.startswith("3: 2: 1: 0: 6: ")  # 9999 % 7 == 3


def test_graphviz_and_mimebundle(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = CBlock("doc", cache=True)
    g = compile(generate(Report(a=generate(Node(kids=[doc])), b=doc, c="c")))
    dot = g.to_graphviz()
    assert 'fillcolor="#ffe08a"' in dot.source  # the cached block is styled apart
    assert "generate" in dot.source
    bundle = g._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith(("<?xml", "<svg"))
    monkeypatch.setenv("PATH", "/nonexistent")
    fallback = g._repr_mimebundle_()
    assert "image/svg+xml" not in fallback
    assert fallback["text/plain"].startswith("digraph")


def test_a_compiled_graph_renders_to_a_file_like_a_log(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = compile(generate(Node(kids=[CBlock("doc")])))
    svg = g.render(tmp_path / "graph.svg")
    assert svg.suffix == ".svg" and "<svg" in svg.read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    fallback = g.render(str(tmp_path / "again.svg"))
    assert fallback.suffix == ".dot" and fallback.read_text().startswith("digraph")


def test_limited_path_keeps_the_last_steps() -> None:
    thunk: Any = generate(Node(kids=[CBlock("leaf")], label="0"))
    for i in range(1, 6):
        thunk = generate(Node(kids=[thunk], label=str(i)))
    graph = compile(thunk)
    leaf = next(n for n in graph if graph[n].kind == "block")
    full = graph.path_of(leaf)
    assert full.count(".") > 4 and graph.path_of(leaf, limit=100) == full
    cut = graph.path_of(leaf, limit=3)
    assert cut.startswith("…") and full.endswith(cut[1:]) and cut.count(".") == 3


def test_path_tails_equal_cut_paths_in_any_order() -> None:
    """A run's span-path tails, built frame by frame from the parent's, are the full
    paths cut (``cut_path``), whatever order the nodes are asked in, at any limit:
    at a step's dot, or exactly at the limit where the end has no dot (long labels)."""
    import random

    from spangraph import Instruction
    from spangraph.nodes._span import TailMemo, cut_path

    layer: list[Any] = [CBlock(f"leaf {i}" + ("x" * 40 if i == 2 else "")) for i in range(4)]
    for _ in range(20):
        layer = [
            generate(Instruction(description=layer[i], grounding=[layer[(i + 1) % 4]]))
            for i in range(4)
        ]
    graph = compile(*layer)
    for limit in (5, 11, 40, 160, 10_000):
        for seed in (1, 2):
            ids = list(graph)
            random.Random(seed).shuffle(ids)
            memo = TailMemo()
            for node_id in ids:
                tail = graph.path_tail(node_id, limit, memo)
                full = graph.path_of(node_id)
                assert tail == cut_path(full, limit), (limit, full)
                assert len(tail) <= limit + 1 and full.endswith(tail.removeprefix("…"))
    paths = [graph.path_of(n) for n in graph]
    assert all(cut_path(p, 10_000) == p for p in paths)
    cut = [cut_path(p, 40) for p in paths if len(p) > 40]
    assert cut and all(c.startswith("….") for c in cut if "." in c[-40:])
    assert cut_path("root" + "x" * 50, 10) == "…" + "x" * 10  # no dot: cut at the limit


def test_a_graph_is_held_while_a_thunk_of_it_is_claimed_and_unfinished() -> None:
    """``SpanGraph.held``: a graph whose thunks another graph's run (or a direct
    ``generate``) has claimed is held until they finish; one whose thunks nobody
    claimed, or whose claimed thunks are finished, is not."""
    first = generate(Node(kids=[CBlock("a")], label="a"))
    second = generate(Node(kids=[CBlock("b")], label="b"))
    graph = compile(first, second)
    assert not graph.held()  # nobody claimed anything
    second._claimed = True  # what a run of another graph with these spans does
    assert graph.held()
    second._set_done("b", "b")  # finished: a declared thunk stays claimed
    assert not graph.held()
    graph._running += 1  # a run of this graph itself
    assert graph.held()
    graph._running -= 1
