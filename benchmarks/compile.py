"""What a graph costs before it runs: declaring it and ``compile()``, in time and memory.

What a user pays is declaration plus ``compile()`` plus ``run()``. This
script puts the first two beside the third, per work node, on two layered
graphs of ``width`` work nodes a layer, each node taking two nodes of the
layer before (``i`` and ``i + 1 mod width``), at 10k and 100k work nodes:

- generations: the scheduler benchmark's graph, ``generate(Op(a=..., b=...))``
  over a first layer of ``CBlock`` leaves. A work node is one generation
  (its ``Op`` component is a second graph node under it).
- tasks: ``@task`` functions, ``pair(a, b)`` over a first layer of
  ``leaf(i)`` tasks. A work node is one task.

For each graph and size:

- time (best of interleaved rounds, each declaring, compiling and running
  every graph once, so a drift in the shared machine's speed reaches all of
  them): declaring the spans, ``compile()``, and ``run()`` of the compiled
  graph with ``ScriptedEngine("x")`` (it answers without suspending, so the
  run is the scheduler's own cost), untraced and traced (the default);
- memory (one pass under ``tracemalloc``, which counts Python's
  allocations): what the declared spans hold, the peak that ``compile()``
  adds above them and what it keeps, and the peak an untraced run adds.

Targets (where they cost no readability): ``compile()`` <= the untraced
run's own cost per node, and <= 1 KB per node for what ``compile()`` adds
at its peak. Each graph's 100k run (untraced and traced) <= 11x its 10k run:
a cost per node that grows with the graph's size or depth shows there (a
task run once made every task's span path, a walk up to a root: 2.7x per node
at 100k). A third, older figure: ``compile()`` of a graph of components
alone (``Layer``, no thunks) per span, <= 10 us, and its 100k run <= 11x
its 10k run.

Run from the repository root: ``python benchmarks/compile.py``.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spangraph import CBlock, Component, Span, compile, generate, run, task
from spangraph.engines import ScriptedEngine

WIDTH = 100
SIZES = (10_000, 100_000)
#: Rounds of the timing at each size; each figure is the best over them.
ROUNDS = {10_000: 5, 100_000: 2}
TARGET_KB_PER_NODE = 1.0
TARGET_LAYER_US = 10.0
TARGET_SCALING = 11.0


class Op(Component[str]):
    template = "{a}+{b}"
    a: Span
    b: Span


class Layer(Component[str]):
    template = "{a} {b} {k}"
    a: Span
    b: Span
    k: int


@task
def leaf(i: int) -> str:
    return f"leaf {i}"


@task
def pair(a: str, b: str) -> str:
    return a[:4] + b[:4]


def generations(total: int, width: int = WIDTH) -> list[Any]:
    layer: list[Any] = [CBlock(f"leaf {i}") for i in range(width)]
    for _ in range(total // width):
        layer = [generate(Op(a=layer[i], b=layer[(i + 1) % width])) for i in range(width)]
    return layer


def tasks(total: int, width: int = WIDTH) -> list[Any]:
    layer: list[Any] = [leaf(i) for i in range(width)]
    for _ in range(total // width - 1):
        layer = [pair(layer[i], layer[(i + 1) % width]) for i in range(width)]
    return layer


def components(total: int, width: int = WIDTH) -> list[Any]:
    """Components alone (no thunks): ``total`` spans, blocks included."""
    layer: list[Any] = [CBlock(f"leaf {i}") for i in range(width)]
    for depth in range(1, total // width):
        layer = [
            Layer(a=layer[i], b=layer[(i + 1) % width], k=depth * width + i) for i in range(width)
        ]
    return layer


GRAPHS: dict[str, Callable[[int], list[Any]]] = {"generations": generations, "tasks": tasks}


@dataclass
class Times:
    """Seconds, the best over rounds."""

    declare: float = float("inf")
    compile: float = float("inf")
    run: float = float("inf")
    traced: float = float("inf")

    def keep_best(self, other: Times) -> None:
        for name in ("declare", "compile", "run", "traced"):
            setattr(self, name, min(getattr(self, name), getattr(other, name)))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def time_once(build: Callable[[int], list[Any]], total: int, engine: ScriptedEngine) -> Times:
    times = Times()
    times.declare, roots = timed(lambda: build(total))
    times.compile, graph = timed(lambda: compile(*roots))
    times.run, result = timed(lambda: run(graph, engine=engine, trace=False, progress=False))
    assert result.status == "done", result.summary()
    roots = build(total)  # finished thunks are not run again: fresh spans for the traced run
    graph = compile(*roots)
    times.traced, result = timed(lambda: run(graph, engine=engine, progress=False))
    assert result.status == "done", result.summary()
    return times


@dataclass
class Memory:
    """Bytes traced by ``tracemalloc``."""

    declared: int  # held by the declared spans
    compile_peak: int  # the most compile() held at once, above the spans
    compile_kept: int  # what the compiled graph holds, above the spans
    run_peak: int  # the most an untraced run held at once, above the graph


def memory_of(build: Callable[[int], list[Any]], total: int, engine: ScriptedEngine) -> Memory:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        roots = build(total)
        gc.collect()
        declared = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        graph = compile(*roots)
        gc.collect()
        compiled, compile_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = run(graph, engine=engine, trace=False, progress=False)
        run_peak = tracemalloc.get_traced_memory()[1]
        assert result.status == "done", result.summary()
    finally:
        tracemalloc.stop()
    return Memory(
        declared=declared - base,
        compile_peak=compile_peak - declared,
        compile_kept=compiled - declared,
        run_peak=run_peak - compiled,
    )


def layer_compile(total: int) -> tuple[float, int]:
    """``compile()`` of a graph of components alone: seconds, spans."""
    roots = components(total)
    took, graph = timed(lambda: compile(*roots))
    return took, len(graph)


def main() -> None:
    engine = ScriptedEngine("x")
    run(compile(*generations(200)), engine=engine, progress=False)  # warm up
    best: dict[tuple[str, int], Times] = {}
    layer_best: dict[int, tuple[float, int]] = {}
    for total in SIZES:
        for _ in range(ROUNDS[total]):
            for name, build in GRAPHS.items():
                best.setdefault((name, total), Times()).keep_best(time_once(build, total, engine))
            took, spans = layer_compile(total)
            layer_best[total] = min(layer_best.get(total, (took, spans)), (took, spans))
    memory = {
        (name, total): memory_of(build, total, engine)
        for total in SIZES
        for name, build in GRAPHS.items()
    }

    print(f"per work node; time: best of {ROUNDS} interleaved rounds; memory: tracemalloc")
    print(
        f"{'graph':>11} {'nodes':>7} | {'declare':>7} {'compile':>7} {'run':>7} {'traced':>7}"
        f" us | {'spans':>5} {'compile':>7} {'kept':>5} {'run':>5} KB"
    )
    for (name, total), t in best.items():
        m = memory[name, total]
        us = [1e6 * s / total for s in (t.declare, t.compile, t.run, t.traced)]
        kb = [b / 1024 / total for b in (m.declared, m.compile_peak, m.compile_kept, m.run_peak)]
        print(
            f"{name:>11} {total:>7} | "
            + " ".join(f"{v:7.2f}" for v in us)
            + " us | "
            + f"{kb[0]:5.2f} {kb[1]:7.2f} {kb[2]:5.2f} {kb[3]:5.2f} KB"
        )
    print("(memory: spans = the declared spans; compile = compile()'s peak above them;")
    print(" kept = what the compiled graph keeps; run = an untraced run's peak above that)")
    for (name, total), t in best.items():
        m = memory[name, total]
        ratio = t.compile / t.run
        kb = m.compile_peak / 1024 / total
        print(
            f"{name} {total}: compile <= run: {'met' if ratio <= 1 else 'MISSED'} "
            f"({ratio:.2f}x); compile <= {TARGET_KB_PER_NODE:g} KB/node: "
            f"{'met' if kb <= TARGET_KB_PER_NODE else 'MISSED'} ({kb:.2f})"
        )

    small_size, large_size = SIZES
    for name in GRAPHS:
        small_t, large_t = best[name, small_size], best[name, large_size]
        for what in ("run", "traced"):
            ratio = getattr(large_t, what) / getattr(small_t, what)
            verdict = "met" if ratio <= TARGET_SCALING else "MISSED"
            print(
                f"{name} {what}, 100k / 10k cost <= {TARGET_SCALING:g}x: {verdict} ({ratio:.2f}x)"
            )

    (small, n_small), (large, n_large) = layer_best[SIZES[0]], layer_best[SIZES[1]]
    for label, cost, n in (("10k", small, n_small), ("100k", large, n_large)):
        print(f"components alone, compile {label:>4} spans: {cost / n * 1e6:5.2f} us/span")
    ratio = large / small
    verdict = "met" if ratio <= TARGET_SCALING else "MISSED"
    print(f"components alone, 100k / 10k cost <= {TARGET_SCALING:g}x: {verdict} ({ratio:.2f}x)")
    worst = max(small / n_small, large / n_large) * 1e6
    verdict = "met" if worst <= TARGET_LAYER_US else "MISSED"
    print(f"components alone, <= {TARGET_LAYER_US:g} us/span: {verdict} (worst {worst:.2f})")


if __name__ == "__main__":
    main()
