"""Instructions per generation node, counted by valgrind (deterministic, unlike wall time).

On a shared two-core machine, wall-time figures move by +-50% from one run
to the next; instruction counts do not. This script runs the scheduler
benchmark's layered graph (``benchmarks/scheduler.py``) under
``valgrind --tool=callgrind`` at two sizes and prints the difference per
generation node, so one-off costs (interpreter start, imports, the first
run) cancel out. Modes:

- ``compile``: building the spans and ``compile()``;
- ``run``: ``run()`` of the compiled graph with tracing off (``compile``'s
  count is subtracted);
- ``traced``: the same with tracing on (an SDK provider with a batch
  processor and an exporter that drops everything, as in the benchmark);
- ``hamilton``: Hamilton's ``execute`` on the same DAG, for comparison.

Usage: ``python benchmarks/instructions.py [--cache] [mode ...]`` (default:
all). Needs ``valgrind`` (Debian package ``valgrind``); takes about a minute
per mode.

``--cache`` also simulates the caches (callgrind's ``--cache-sim``, with a
48 KB first-level data cache and a 2 MB second level, this project's VMs'
per-core sizes) and prints misses per node beside the instructions. A change
can cost wall time that instructions do not show: the generate protocol as
one coroutine (314abe2) added 20% instructions to a run's node but 87% more
first-level data read misses (``docs/design/scheduler.md``, "Where the wall time
went"). The simulation is deterministic too; it is not the hardware, so use it
to compare two commits, not as a time.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

SMALL, LARGE = 5, 15  # layers of 100 generations
WIDTH = 100
MODES = ("compile", "run", "traced", "hamilton")
#: Simulated caches for ``--cache``: size, associativity, line (bytes).
CACHE_SIM = ("--cache-sim=yes", "--D1=49152,12,64", "--LL=2097152,16,64")
#: The events callgrind reports with ``--cache-sim`` ("LL" is the simulated L2 here),
#: in its order; without it only the first.
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "L2mr", "L2mw")
#: What ``--cache`` prints per node, beside the instructions.
SHOWN = {"D1mr": "L1d read misses", "D1mw": "L1d write misses", "L2mr": "L2 read misses"}


def child(mode: str, layers: int) -> None:
    """What runs under valgrind: warm up, build, and (for run modes) run."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from scheduler import hamilton_source, install_tracing, spangraph_layers

    if mode == "hamilton":
        from hamilton import ad_hoc_utils, base, driver

        namespace: dict[str, object] = {}
        exec(hamilton_source(layers, WIDTH), namespace)  # generated source: the DAG
        functions = [v for k, v in namespace.items() if k.startswith("n_")]
        module = ad_hoc_utils.create_temporary_module(*functions)
        dr = driver.Builder().with_modules(module).with_adapters(base.DictResult()).build()
        sys.setrecursionlimit(10_000)
        gc.collect()
        if os.environ.get("SG_EXECUTE") == "1":
            dr.execute([f"n_{layers}_{i}" for i in range(WIDTH)])
        return

    from spangraph import compile, run
    from spangraph.engines import ScriptedEngine

    traced = mode == "traced"
    if traced:
        install_tracing()
    engine = ScriptedEngine("x")
    run(compile(*spangraph_layers(2)), engine=engine, trace=traced, progress=False)
    graph = compile(*spangraph_layers(layers))
    gc.collect()
    if mode != "compile":
        run(graph, engine=engine, trace=traced, progress=False)


def count(mode: str, layers: int, execute: bool = True, cache: bool = False) -> list[int]:
    """The run's event counts under valgrind: instructions, and with ``cache`` the
    simulated cache's (``EVENTS``, in order)."""
    with tempfile.TemporaryDirectory() as tmp:
        # A fixed hash seed: string hashes decide dict and set layouts, and so how many
        # instructions a run takes (Hamilton's count moved by 25% between seeds).
        env = {**os.environ, "SG_EXECUTE": "1" if execute else "0", "PYTHONHASHSEED": "0"}
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                *(CACHE_SIM if cache else ()),
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                mode,
                str(layers),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    found = re.search(r"Collected : ([\d ]+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return [int(n) for n in found.group(1).split()]


def marginal(mode: str, execute: bool = True, cache: bool = False) -> dict[str, float]:
    """Events per generation node between the small and the large graph."""
    with ThreadPoolExecutor(2) as pool:
        small, large = pool.map(lambda n: count(mode, n, execute, cache), (SMALL, LARGE))
    nodes = (LARGE - SMALL) * WIDTH
    # Without the cache simulation, valgrind counts instructions only: the first event.
    pairs = zip(EVENTS, small, large, strict=False)
    return {event: (b - a) / nodes for event, a, b in pairs}


def minus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {event: value - b.get(event, 0.0) for event, value in a.items()}


def main(modes: list[str], cache: bool) -> None:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package `valgrind`); nothing measured")
        return
    figures: dict[str, dict[str, float]] = {}
    wanted = {"compile", "run", "traced"} & set(modes)
    build = marginal("compile", cache=cache) if wanted else {}
    for mode in modes:
        if mode == "compile":
            figures[mode] = build
        elif mode == "hamilton":
            try:
                figures[mode] = minus(
                    marginal(mode, cache=cache), marginal(mode, execute=False, cache=cache)
                )
            except subprocess.CalledProcessError:
                print("  hamilton: not installed (`make bench` installs sf-hamilton)")
        else:
            figures[mode] = minus(marginal(mode, cache=cache), build)
    print("per generation node (valgrind, difference of 1,500- and 500-node runs)")
    shown = SHOWN if cache else {}
    print(f"  {'':<9} {'instructions':>12}" + "".join(f" {name:>17}" for name in shown.values()))
    for mode, value in figures.items():
        cells = "".join(f" {value[event]:>17,.0f}" for event in shown)
        print(f"  {mode:<9} {value['Ir']:>12,.0f}{cells}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main([m for m in sys.argv[1:] if m in MODES] or list(MODES), "--cache" in sys.argv)
