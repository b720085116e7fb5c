"""Once a run is failing or cancelled, nothing new starts: no node, no retry, no
hand-off; a result that arrives late is kept, and no thunk leaves a final state."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spangraph import CBlock, Component, NodeFailedError, RetryPolicy, Span, arun, generate, task
from spangraph.engines import Request, ScriptedEngine, TransientEngineError
from spangraph.events import Event, NodeFailed
from spangraph.nodes import ModelOutputThunk, ThunkState


class Op(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str = "op"


class Clock:
    """One sequence for engine calls and failures: order, not wall time."""

    def __init__(self) -> None:
        self.tick = itertools.count()
        self.calls: list[int] = []
        self.failed: list[int] = []

    def engine(self, latency: float = 0.0) -> ScriptedEngine:
        def start(request: Request) -> float:  # asked as the call starts
            self.calls.append(next(self.tick))
            return latency

        return ScriptedEngine("ok", latency=start)

    def listener(self, event: Event) -> None:
        if isinstance(event, NodeFailed):
            self.failed.append(next(self.tick))


@task
async def shielded(delay: float) -> str:
    with anyio.CancelScope(shield=True):
        await anyio.sleep(delay)
    return "late"


@task
async def boom() -> str:
    await anyio.sleep(0.01)
    raise ValueError("boom")


def states(thunks: list[ModelOutputThunk[Any]]) -> list[ThunkState]:
    return [t.state for t in thunks]


def test_a_late_shielded_task_starts_nothing_after_the_failure() -> None:
    clock = Clock()
    late = shielded(0.1)
    downstream = generate(Op(inputs=[late]))

    async def main() -> None:
        with pytest.raises(NodeFailedError, match="boom"):
            await arun(downstream, boom(), engine=clock.engine(), listeners=[clock.listener])
        after = states([late, downstream])
        await anyio.sleep(0.3)  # time for anything left behind to (wrongly) go on
        assert states([late, downstream]) == after

    anyio.run(main)
    assert clock.calls == []  # the engine was never called
    assert late.state is ThunkState.DONE and late.value == "late"  # kept, not lost
    assert downstream.state is ThunkState.PENDING


def test_a_retry_that_fires_after_the_failure_does_not_run() -> None:
    clock = Clock()
    attempts = {"flaky": 0}

    def flaky(request: Request) -> str:
        attempts["flaky"] += 1
        raise TransientEngineError("try again")

    async def stubborn_sleep(delay: float) -> None:
        with anyio.CancelScope(shield=True):  # a sleep that ignores the run's cancellation
            await anyio.sleep(delay)

    retried = generate(CBlock("flaky"), engine=ScriptedEngine(flaky))
    policy = RetryPolicy(attempts=5, backoff=0.05, jitter=0, sleep=stubborn_sleep)

    async def main() -> None:
        with pytest.raises(NodeFailedError, match="boom"):
            await arun(retried, boom(), engine=clock.engine(), retry=policy)
        await anyio.sleep(0.4)

    anyio.run(main)
    assert attempts["flaky"] == 1
    assert retried.state.finished or retried.state is ThunkState.PENDING
    assert retried.state is not ThunkState.DONE


def test_handed_off_work_is_not_started_after_the_failure() -> None:
    clock = Clock()
    slow_input = shielded(0.05)
    fan = [generate(Op(inputs=[slow_input], label=f"g{i}")) for i in range(6)]

    async def main() -> None:
        with pytest.raises(NodeFailedError):
            await arun(*fan, boom(), engine=clock.engine(latency=0.01))
        before = states(fan)
        await anyio.sleep(0.3)
        assert states(fan) == before

    anyio.run(main)
    assert clock.calls == []


@st.composite
def failing_graphs(
    draw: st.DrawFn,
) -> tuple[int, list[list[int]], dict[int, str], dict[int, float]]:
    n = draw(st.integers(min_value=3, max_value=25))
    inputs = [
        sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        for i in range(n)
    ]
    tasks = st.integers(0, n - 1).map(lambda i: i - i % 2)  # even nodes are tasks
    roles = draw(
        st.dictionaries(
            tasks,
            st.sampled_from(["fail", "shielded", "slow"]),
            min_size=1,
            max_size=max(1, n // 3),
        )
    )
    if "fail" not in roles.values():
        roles[draw(tasks)] = "fail"
    delays = {i: draw(st.sampled_from([0.0, 0.005, 0.02, 0.05])) for i in range(n)}
    return n, inputs, roles, delays


@given(failing_graphs())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_engine_call_starts_after_the_first_failure(graph: Any) -> None:
    n, inputs, roles, delays = graph
    clock = Clock()

    @task
    async def work(index: int, *upstream: Any) -> str:
        role = roles.get(index)
        if role == "shielded":
            with anyio.CancelScope(shield=True):
                await anyio.sleep(delays[index] + 0.02)
        else:
            await anyio.sleep(delays[index])
        if role == "fail":
            raise ValueError(f"node {index} fails")
        return f"t{index}"

    nodes: list[ModelOutputThunk[Any]] = []
    for i in range(n):
        ups = [nodes[j] for j in inputs[i]]
        if i % 2:
            nodes.append(generate(Op(inputs=ups or [CBlock(f"seed {i}")], label=f"g{i}")))
        else:
            nodes.append(work(i, *ups))
    engine = clock.engine(latency=0.005)

    async def main() -> None:
        with pytest.raises(NodeFailedError):
            await arun(*nodes, engine=engine, listeners=[clock.listener], progress=False)
        finished = {i: t.state for i, t in enumerate(nodes) if t.state.finished}
        await anyio.sleep(0.1)
        for i, state in finished.items():
            assert nodes[i].state is state  # no thunk left a final state
        assert all(t.state is not ThunkState.RUNNING for t in nodes)

    anyio.run(main)
    assert clock.failed, "the run failed, so a failure was recorded"
    first_failure = clock.failed[0]
    assert all(call < first_failure for call in clock.calls)
