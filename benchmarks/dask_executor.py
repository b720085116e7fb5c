"""DaskExecutor benchmark: what spangraph adds per generation on a Dask cluster.

On a process ``LocalCluster`` of 2 workers (1 thread each):

(a) spangraph: N instant generations (``ScriptedEngine``, 0 ms) through
    ``run(..., executor=DaskExecutor(...))``;
(b) Dask's floor, in the same run: N ``client.submit`` calls of a function
    that returns a payload of the same size (the msgpack bytes of one of
    (a)'s requests), all submitted, then gathered;
(c) throughput at 100 ms engine latency: generations per second, with
    ``max_concurrency`` 2 and 8 (2 workers: the workers are the ceiling).

Target: (a) <= 1.3x (b) per generation. Printed: seconds per generation and
the ratio. The machine is shared: run it on a quiet one; compare the ratio,
not the absolute figures.
"""

from __future__ import annotations

import sys
import time

import msgpack
from distributed import Client, LocalCluster

from spangraph import Component, Span, generate, options, run
from spangraph.engines import EngineSpec
from spangraph.graph import DaskExecutor

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


class Step(Component[str]):
    template = "{label}: {text}"
    text: Span
    label: str


def echo(payload: bytes) -> bytes:
    return payload


def graph(count: int, first: int = 0) -> list[object]:
    with options(temperature=0):
        return [generate(Step(text=f"item {i}", label="step")) for i in range(first, first + count)]


def main() -> None:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        spec = EngineSpec(
            "spangraph.engines:ScriptedEngine", {"reply": "ok", "max_concurrency": 100_000}
        )
        engine = spec.build()
        executor = DaskExecutor(client, engines={engine: spec})
        run(*graph(20), engine=engine, executor=executor, progress=False)  # warm up

        started = time.perf_counter()
        result = run(*graph(N, 100), engine=engine, executor=executor, progress=False)
        spangraph_s = (time.perf_counter() - started) / N
        assert result.generations == N

        payload = msgpack.packb(
            {"segments": [["step: item 100", "0" * 32, False, None, False]], "options": {}}
        )
        started = time.perf_counter()
        futures = [client.submit(echo, payload, pure=False) for _ in range(N)]
        client.gather(futures)
        floor_s = (time.perf_counter() - started) / N
        del futures

        print(f"DaskExecutor, {N} instant generations on 2 workers")
        print(f"  spangraph   {spangraph_s * 1e3:8.3f} ms per generation")
        print(f"  dask floor  {floor_s * 1e3:8.3f} ms per task (client.submit + gather)")
        print(f"  ratio       {spangraph_s / floor_s:8.2f}  (target <= 1.3)")

        slow_spec = EngineSpec("spangraph.engines:ScriptedEngine", {"reply": "ok", "latency": 0.1})
        slow = slow_spec.build()
        slow_executor = DaskExecutor(client, engines={slow: slow_spec})
        for limit in (2, 8):
            started = time.perf_counter()
            run(
                *graph(40, 10_000 * limit),
                engine=slow,
                executor=slow_executor,
                max_concurrency=limit,
                progress=False,
            )
            rate = 40 / (time.perf_counter() - started)
            print(f"  100 ms engine, max_concurrency={limit}: {rate:6.1f} generations/s")


if __name__ == "__main__":
    main()
