"""Python bytecodes per generation node, by function: where a run's work is, in counts.

``instructions.py`` counts machine instructions under valgrind: the whole
cost, deterministic, but it takes minutes and cannot say which Python
function they went to. This script counts the bytecodes each Python
function runs (``sys.settrace`` with opcode events) while ``run()`` executes
the scheduler benchmark's layered graph (``benchmarks/scheduler.py``) at two
sizes, and prints the difference per generation node, so one-off costs
cancel out. It takes seconds and gives the same counts every time. It does
not see C code (a dict lookup, the SDK's C parts) or cache misses, so a
change can cost wall time it does not show; it does show which functions a
change added work to, and how much.

Modes: ``run`` (tracing off) and ``traced`` (an SDK provider with a batch
processor and an exporter that drops everything, as in the benchmark).

``--save FILE`` writes the per-function counts as JSON; ``--against FILE``
prints, beside each function, the count of an earlier save (another
commit's: run this file from this checkout with ``PYTHONPATH`` at the other
one). Usage: ``python benchmarks/opcodes.py [--top N] [--save F] [--against F]
[run|traced ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from types import FrameType
from typing import Any

SMALL, LARGE = 3, 6  # layers of 100 generations
WIDTH = 100
MODES = ("run", "traced")


def counts(traced: bool, layers: int) -> Counter[str]:
    """Bytecodes run by each function during one ``run()`` of the layered graph."""
    from scheduler import spangraph_layers

    import spangraph
    from spangraph import compile, run
    from spangraph.engines import ScriptedEngine

    engine = ScriptedEngine("x")
    graph = compile(*spangraph_layers(layers))
    found: Counter[str] = Counter()
    # Names relative to the checkout the package comes from (another commit's, too).
    here = os.path.dirname(os.path.dirname(os.path.abspath(spangraph.__file__)))

    def name_of(frame: FrameType) -> str:
        code = frame.f_code
        where = code.co_filename.replace(here + os.sep, "").split("site-packages/")[-1]
        return f"{where}:{code.co_name}"

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        key = name_of(frame)

        def on_opcode(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                found[key] += 1
            return on_opcode

        return on_opcode

    sys.settrace(on_call)
    try:
        run(graph, engine=engine, trace=traced, progress=False)
    finally:
        sys.settrace(None)
    return found


def per_node(traced: bool) -> dict[str, float]:
    """Bytecodes per generation node, by function, between the small and the large graph."""
    from scheduler import install_tracing, spangraph_layers

    from spangraph import compile, run
    from spangraph.engines import ScriptedEngine

    if traced:
        install_tracing()
    # Warm up: imports, the first run's one-off work.
    run(compile(*spangraph_layers(2)), engine=ScriptedEngine("x"), trace=traced, progress=False)
    small, large = counts(traced, SMALL), counts(traced, LARGE)
    nodes = (LARGE - SMALL) * WIDTH
    return {name: (large[name] - small[name]) / nodes for name in small.keys() | large.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", default=list(MODES), help="run, traced (default: both)")
    parser.add_argument("--top", type=int, default=25, help="functions shown per mode")
    parser.add_argument("--save", help="write the counts to this JSON file")
    parser.add_argument("--against", help="show an earlier --save beside the counts")
    args = parser.parse_args()
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode {', '.join(sorted(unknown))}: choose from {', '.join(MODES)}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    earlier: dict[str, dict[str, float]] = {}
    if args.against:
        with open(args.against) as file:
            earlier = json.load(file)
    saved: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        now = saved[mode] = per_node(mode == "traced")
        before = earlier.get(mode, {})
        total = sum(now.values())
        print(f"{mode}: {total:,.0f} bytecodes per generation node", end="")
        print(f" (earlier: {sum(before.values()):,.0f})" if before else "")
        names = sorted(
            now.keys() | before.keys(), key=lambda n: -max(now.get(n, 0), before.get(n, 0))
        )
        for name in names[: args.top]:
            was = f"{before.get(name, 0.0):8.1f}  " if before else ""
            print(f"  {was}{now.get(name, 0.0):8.1f}  {name}")
    if args.save:
        with open(args.save, "w") as file:
            json.dump(saved, file, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
