"""Compile cost per span on a layered graph of 10k and 100k spans.

Each layer is ``width`` components; each component has two parts from the
layer before (the first layer is CBlocks) and one parameter. Building the
spans is not timed; ``compile()`` (content ids, walk, networkx graph) is.
Targets: <= 10 us per span, and the 100k run <= 11x the 10k run.
"""

from __future__ import annotations

import gc
import time

from spangraph import CBlock, Component, Span, compile


class Layer(Component[str]):
    template = "{a} {b} {k}"
    a: Span
    b: Span
    k: int


def layered(total: int, width: int = 100) -> list[Span]:
    layer: list[Span] = [CBlock(f"leaf {i}") for i in range(width)]
    count = width
    depth = 0
    while count < total:
        depth += 1
        layer = [
            Layer(a=layer[i], b=layer[(i + 1) % width], k=depth * width + i) for i in range(width)
        ]
        count += width
    return layer


def measure(total: int, repeats: int = 3) -> tuple[float, float, int]:
    """Best compile time, best time to also materialise the networkx view, spans."""
    best = best_nx = float("inf")
    size = 0
    for _ in range(repeats):
        roots = layered(total)
        gc.collect()
        start = time.perf_counter()
        graph = compile(*roots)
        mid = time.perf_counter()
        graph.graph  # noqa: B018 - materialise the networkx DiGraph
        end = time.perf_counter()
        best, best_nx = min(best, mid - start), min(best_nx, end - mid)
        size = len(graph)
    return best, best_nx, size


def main() -> None:
    small, small_nx, n_small = measure(10_000)
    large, large_nx, n_large = measure(100_000, repeats=2)
    for label, cost, nx_cost, n in (
        ("10k", small, small_nx, n_small),
        ("100k", large, large_nx, n_large),
    ):
        print(
            f"compile {label:>4} spans: {cost * 1e3:8.1f} ms  {cost / n * 1e6:5.2f} us/span"
            f"   (+ networkx view on first use: {nx_cost / n * 1e6:5.2f} us/span)"
        )
    print(f"100k / 10k cost ratio: {large / small:.2f}x (target <= 11x)")
    worst = max(small / n_small, large / n_large) * 1e6
    print(f"target <= 10 us/span: {'met' if worst <= 10 else 'MISSED'} (worst {worst:.2f})")


if __name__ == "__main__":
    main()
