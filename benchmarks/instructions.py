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

Usage: ``python benchmarks/instructions.py [mode ...]`` (default: all).
Needs ``valgrind`` (Debian package ``valgrind``); takes about a minute per mode.
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


def count(mode: str, layers: int, execute: bool = True) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        # A fixed hash seed: string hashes decide dict and set layouts, and so how many
        # instructions a run takes (Hamilton's count moved by 25% between seeds).
        env = {**os.environ, "SG_EXECUTE": "1" if execute else "0", "PYTHONHASHSEED": "0"}
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
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
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def marginal(mode: str, execute: bool = True) -> float:
    """Instructions per generation node between the small and the large graph."""
    with ThreadPoolExecutor(2) as pool:
        small, large = pool.map(lambda n: count(mode, n, execute), (SMALL, LARGE))
    return (large - small) / ((LARGE - SMALL) * WIDTH)


def main(modes: list[str]) -> None:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package `valgrind`); nothing measured")
        return
    figures: dict[str, float] = {}
    build = marginal("compile") if {"compile", "run", "traced"} & set(modes) else 0.0
    for mode in modes:
        if mode == "compile":
            figures[mode] = build
        elif mode == "hamilton":
            try:
                figures[mode] = marginal(mode) - marginal(mode, execute=False)
            except subprocess.CalledProcessError:
                print("  hamilton: not installed (`make bench` installs sf-hamilton)")
        else:
            figures[mode] = marginal(mode) - build
    print("instructions per generation node (valgrind, difference of 1,500- and 500-node runs)")
    for mode, value in figures.items():
        print(f"  {mode:<9} {value:>10,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main([m for m in sys.argv[1:] if m in MODES] or list(MODES))
