"""What a traced run keeps while it runs, counted: the garbage collector's load.

A traced run keeps each node's span, its links, its attributes and the
path tails it has worked out until the run ends. Each of them that is a
container (a tuple, a dict, an object) is counted by the collector's young
generation when it is made, and is moved up the generations by its
collections; the more a run keeps per node, the sooner a big run sets off
a full collection, which scans the whole heap
(``docs/design/scheduler.md``, "What a traced run keeps"). Wall time is
never asserted; this counts the objects.
"""

from __future__ import annotations

import gc

from spangraph import CBlock, Component, Span, compile, generate, run
from spangraph import events as ev
from spangraph.engines import ScriptedEngine

#: Containers a traced run keeps per generation node of the layered graph below
#: (2026-12-02: 7.96 here, 9.88 before the path-tail memo kept no pair per frame;
#: a28268e, before issue #19, 8.89). A margin for a field more, not for a tuple more
#: per span, which is what this guards against.
HELD_PER_GENERATION = 8.5


class Op(Component[str]):
    template = "{a}+{b}"
    a: Span
    b: Span


def held_per_generation(width: int = 30, layers: int = 40) -> float:
    """Containers the process gained per generation between the 200th and the 1000th
    generation's start of one traced run of a layered graph (each generation reads
    two of the layer before, as in ``benchmarks/scheduler.py``), with the collector
    off during the run, so that young collections do not untrack tuples of atomic
    values (they would hide them from ``gc.get_objects``)."""
    layer: list[object] = [CBlock(f"leaf {i}") for i in range(width)]
    for _ in range(layers):
        layer = [generate(Op(a=layer[i], b=layer[(i + 1) % width])) for i in range(width)]
    graph = compile(*layer)
    first, last = 200, 1000
    objects: dict[int, int] = {}
    started = 0

    def count(event: ev.Event) -> None:
        nonlocal started
        if isinstance(event, ev.NodeStarted):  # generations are the only work here
            started += 1
            if started in (first, last):
                objects[started] = len(gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        result = run(
            graph, engine=ScriptedEngine("x"), trace=True, progress=False, listeners=[count]
        )
    finally:
        gc.enable()
    assert result.status == "done" and result.log is not None
    return (objects[last] - objects[first]) / (last - first)


def test_a_traced_run_keeps_few_containers_per_generation() -> None:
    held = held_per_generation()
    assert held <= HELD_PER_GENERATION, (
        f"a traced run keeps {held:.2f} containers per generation node "
        f"(at most {HELD_PER_GENERATION}): what does it keep per span now?"
    )
    assert held > 5  # the span, its context, its link, attributes, ids: the count sees them
