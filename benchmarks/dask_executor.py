"""DaskExecutor benchmark: what spangraph adds per generation on a Dask cluster.

On a process ``LocalCluster`` of 2 workers (1 thread each):

(a) spangraph: N instant generations (``ScriptedEngine``, 0 ms) through
    ``run(..., executor=DaskExecutor(...))``, one Dask task per generation;
(a') the same with ``DaskExecutor(..., batch=BATCH)``: the requests ready in
    one turn of the driver's loop share Dask tasks;
(b) Dask's floor: N ``client.submit`` calls of a function that returns a
    payload of the same size (the msgpack bytes of one of (a)'s requests),
    all submitted, then gathered;
(c) throughput at 100 ms engine latency: generations per second, with
    ``max_concurrency`` 2 and 8 (2 workers: the workers are the ceiling),
    one task per generation and batched.

(d) with ``--real``: the embedded engine (``LlamaCppEngine``), 8 questions over
    the Apache-2.0 document (``examples/apache-2.0.txt``, a span-cached
    ``CBlock``) on the 2 workers (1 slot and 1 thread each) versus 1 local
    process (1 slot, 2 threads): wall time, tokens evaluated and tokens
    reused from KV slots. On 2 cores no speed-up is expected: the figure is
    the cost of distribution (each worker prefills the document once).

(a), (a') and (b) run interleaved, ROUNDS times; printed: the median seconds
per generation of each and the ratios to the floor. Target: (a) <= 1.3x (b).
The machine is shared: compare the ratios, not the absolute figures.

Usage: ``python benchmarks/dask_executor.py [N] [ROUNDS] [--real]`` (default 2000, 3).
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgpack
from distributed import Client, LocalCluster

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.engines import EngineSpec
from spangraph.graph import DaskExecutor

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(ARGS[0]) if ARGS else 2000
ROUNDS = int(ARGS[1]) if len(ARGS) > 1 else 3
REAL = "--real" in sys.argv[1:]
DOCUMENT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "apache-2.0.txt"
QUESTIONS = [
    "Who is a Licensor?",
    "What is a Derivative Work?",
    "What is a Contribution?",
    "What does Object form mean?",
    "What is a Contributor?",
    "Who may grant licenses?",
    "What is Source form?",
    "What is a Work?",
]
BATCH = 64


class Step(Component[str]):
    template = "{label}: {text}"
    text: Span
    label: str


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


def real_engine(client: Client) -> None:
    """(d): the same 8 questions on the workers and in this process, fresh KV folders
    (the time includes loading the model: once per worker, once here)."""
    document = CBlock(DOCUMENT.read_text(), cache=True)
    with tempfile.TemporaryDirectory() as tmp:
        for where in ("2 workers", "1 local process"):
            settings: dict[str, Any] = {"n_ctx": 4096, "n_parallel": 1}
            settings["kv_dir"] = str(pathlib.Path(tmp, where.replace(" ", "-")))
            settings["n_threads"] = 1 if where == "2 workers" else 2
            spec = EngineSpec("spangraph.engines:LlamaCppEngine", settings)
            engine = spec.build()
            executor = (
                DaskExecutor(client, engines={engine: spec}) if where == "2 workers" else None
            )
            with options(temperature=0, max_tokens=8, stop=["\n"]):
                thunks = [generate(Ask(document=document, question=q)) for q in QUESTIONS]
            started = time.perf_counter()
            result = run(*thunks, engine=engine, executor=executor, progress=False)
            took = time.perf_counter() - started
            assert result.status == "done"
            evaluated = sum(t.usage.input_tokens - t.usage.cached_input_tokens for t in thunks)
            reused = sum(t.usage.cached_input_tokens for t in thunks)
            print(
                f"  LlamaCppEngine, 8 questions over Apache-2.0, {where:<15}: {took:6.1f} s, "
                f"{evaluated:6d} tokens evaluated, {reused:6d} reused"
            )
            if executor is not None:
                executor.close()
            else:
                engine.close()


def echo(payload: bytes) -> bytes:
    return payload


def graph(count: int, first: int = 0) -> list[object]:
    with options(temperature=0):
        return [generate(Step(text=f"item {i}", label="step")) for i in range(first, first + count)]


def main() -> None:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        spec = EngineSpec(
            "spangraph.engines:ScriptedEngine", {"reply": "ok", "max_concurrency": 100_000}
        )
        engine = spec.build()
        one_each = DaskExecutor(client, engines={engine: spec})
        batched = DaskExecutor(client, engines={engine: spec}, batch=BATCH)
        first = iter(range(100, 10**9, N))

        def spangraph(executor: DaskExecutor) -> float:
            thunks = graph(N, next(first))
            started = time.perf_counter()
            result = run(*thunks, engine=engine, executor=executor, progress=False)
            took = (time.perf_counter() - started) / N
            assert result.generations == N
            return took

        payload = msgpack.packb(
            {"segments": [["step: item 100", "0" * 32, False, None, False]], "options": {}}
        )

        def floor() -> float:
            started = time.perf_counter()
            futures = [client.submit(echo, payload, pure=False) for _ in range(N)]
            client.gather(futures)
            took = (time.perf_counter() - started) / N
            del futures
            return took

        contestants: dict[str, Callable[[], float]] = {
            "spangraph": lambda: spangraph(one_each),
            f"spangraph, batch={BATCH}": lambda: spangraph(batched),
            "dask floor": floor,
        }
        for executor in (one_each, batched):  # warm up
            run(*graph(20, next(first)), engine=engine, executor=executor, progress=False)
        times: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(ROUNDS):
            for name, measure in contestants.items():
                times[name].append(measure())
        medians = {name: statistics.median(values) for name, values in times.items()}
        floor_s = medians["dask floor"]

        print(f"DaskExecutor, {N} instant generations on 2 workers, median of {ROUNDS} rounds")
        for name, seconds in medians.items():
            rounds = " ".join(f"{v * 1e3:.2f}" for v in times[name])
            print(
                f"  {name:<22} {seconds * 1e3:8.3f} ms per generation  "
                f"ratio {seconds / floor_s:5.2f}  (rounds: {rounds})"
            )
        print("  target: spangraph <= 1.3x the dask floor")

        slow_spec = EngineSpec("spangraph.engines:ScriptedEngine", {"reply": "ok", "latency": 0.1})
        slow = slow_spec.build()
        for batch in (1, BATCH):
            slow_executor = DaskExecutor(client, engines={slow: slow_spec}, batch=batch)
            for limit in (2, 8):
                started = time.perf_counter()
                run(
                    *graph(40, next(first)),
                    engine=slow,
                    executor=slow_executor,
                    max_concurrency=limit,
                    progress=False,
                )
                rate = 40 / (time.perf_counter() - started)
                print(
                    f"  100 ms engine, batch={batch}, max_concurrency={limit}: "
                    f"{rate:6.1f} generations/s"
                )
        if REAL:
            real_engine(client)


if __name__ == "__main__":
    main()
