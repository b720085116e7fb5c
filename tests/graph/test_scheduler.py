from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from functools import partial
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spangraph import (
    CBlock,
    Component,
    NodeFailedError,
    RetryPolicy,
    Span,
    arun,
    compile,
    generate,
    run,
    task,
)
from spangraph.engines import EngineRequestError, Request, ScriptedEngine, TransientEngineError
from spangraph.events import Event, NodeRetried, NodeSkipped
from spangraph.nodes import ModelOutputThunk, ThunkState
from spangraph.nodes._internal import PathTracker


class Op(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def reply(request: Request) -> str:
    return digest(request.text)


dags = st.integers(min_value=1, max_value=300).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.lists(st.integers(min_value=0, max_value=10**6), max_size=3),
            min_size=n,
            max_size=n,
        ),
    )
)


def build(n: int, picks: list[list[int]]) -> tuple[list[ModelOutputThunk[str]], list[list[int]]]:
    thunks: list[ModelOutputThunk[str]] = []
    inputs: list[list[int]] = []
    for i in range(n):
        chosen = sorted({p % i for p in picks[i]}) if i else []
        inputs.append(chosen)
        kids: list[Span] = [thunks[j] for j in chosen] or [CBlock(f"seed {i}")]
        thunks.append(generate(Op(inputs=kids, label=f"n{i}")))
    return thunks, inputs


def reference(n: int, inputs: list[list[int]]) -> list[str]:
    values: list[str] = []
    for i in range(n):
        body = "\n".join(values[j] for j in inputs[i]) if inputs[i] else f"seed {i}"
        values.append(digest(f"n{i}: {body}"))
    return values


@given(dags, st.integers(min_value=1, max_value=8))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_dags_match_sequential_reference(dag: Any, limit: int) -> None:
    n, picks = dag
    thunks, inputs = build(n, picks)
    engine = ScriptedEngine(reply)
    result = run(*thunks, engine=engine, max_concurrency=limit, progress=False)
    assert result.status == "done"
    assert [t.value for t in thunks] == reference(n, inputs)
    assert engine.max_in_flight <= limit


@given(dags, st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_continue_skips_exactly_the_descendants_of_failures(dag: Any, data: st.DataObject) -> None:
    n, picks = dag
    failing = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=5))
    thunks, inputs = build(n, picks)

    def flaky(request: Request) -> str:
        label = request.text.split(":", 1)[0]
        if int(label[1:]) in failing:
            raise EngineRequestError(f"{label} refused")
        return digest(request.text)

    result = run(*thunks, engine=ScriptedEngine(flaky), on_error="continue", progress=False)
    # A node downstream of a failure is skipped (even one that would fail itself).
    downstream: set[int] = set()
    failed: set[int] = set()
    for i in range(n):
        if any(j in failed or j in downstream for j in inputs[i]):
            downstream.add(i)
        elif i in failing:
            failed.add(i)
    for i, thunk in enumerate(thunks):
        if i in failed:
            assert thunk.state is ThunkState.FAILED
        elif i in downstream:
            assert thunk.state is ThunkState.SKIPPED
            assert "failed" in (thunk.skip_reason or "")
        else:
            assert thunk.state is ThunkState.DONE
    assert len(result.failed) == len(failed)
    assert len(result.skipped) == len(downstream)
    assert result.status == ("partial" if failed else "done")


def test_concurrency_limits_global_and_per_engine() -> None:
    fast = ScriptedEngine(reply, latency=0.01, max_concurrency=2)
    other = ScriptedEngine(reply, latency=0.01, max_concurrency=3)
    a = [generate(Op(inputs=[CBlock(str(i))], label="a"), engine=fast) for i in range(10)]
    b = [generate(Op(inputs=[CBlock(str(i))], label="b"), engine=other) for i in range(10)]
    run(*a, *b, progress=False)
    assert (fast.max_in_flight, other.max_in_flight) == (2, 3)
    assert fast.calls == other.calls == 10

    shared = ScriptedEngine(reply, latency=0.01, max_concurrency=8)
    c = [generate(Op(inputs=[CBlock(str(i))], label="c")) for i in range(12)]
    run(*c, engine=shared, max_concurrency=3, progress=False)
    assert shared.max_in_flight == 3


def test_views_share_their_engines_budget() -> None:
    from spangraph import options

    live = {"now": 0, "max": 0, "calls": 0}

    async def tracked(request: Request) -> str:
        live["now"] += 1
        live["calls"] += 1
        live["max"] = max(live["max"], live["now"])
        await anyio.sleep(0.01)
        live["now"] -= 1
        return "v"

    base = ScriptedEngine(tracked, max_concurrency=2)
    view = options(temperature=0)(base)
    nodes = [
        generate(Op(inputs=[CBlock(str(i))], label="v"), engine=view if i % 2 else base)
        for i in range(8)
    ]
    run(*nodes, progress=False)
    assert live["max"] == 2 and live["calls"] == 8


def test_transient_errors_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    failures = {"left": 2}

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def sometimes(request: Request) -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise TransientEngineError("overloaded")
        return "fine"

    engine = ScriptedEngine(sometimes)
    thunk = generate(Op(inputs=["x"], label="r"))
    policy = RetryPolicy(attempts=3, backoff=0.5, jitter=0.0, sleep=fake_sleep)
    result = run(thunk, engine=engine, retry=policy, progress=False, keep_events=True)
    assert thunk.value == "fine"
    assert sleeps == [0.5, 1.0]
    assert engine.calls == 3 and result.attempts == 3
    retried = [e for e in result.events if isinstance(e, NodeRetried)]
    assert [e.attempt for e in retried] == [1, 2]


def test_backoff_is_capped_and_jittered_within_bounds() -> None:
    import random

    policy = RetryPolicy(attempts=10, backoff=1.0, max_backoff=4.0, jitter=0.25)
    rng = random.Random(0)
    for attempt in range(1, 9):
        base = min(4.0, 2 ** (attempt - 1))
        assert base * 0.75 <= policy.delay(attempt, rng) <= base * 1.25


def test_non_retryable_errors_are_never_retried() -> None:
    engine = ScriptedEngine(lambda r: (_ for _ in ()).throw(EngineRequestError("bad request")))
    thunk = generate(Op(inputs=["x"], label="bad"))
    with pytest.raises(NodeFailedError) as info:
        run(thunk, engine=engine, retry=RetryPolicy(attempts=5, sleep=_no_sleep), progress=False)
    assert engine.calls == 1
    assert info.value.path == "generate(Op)"
    assert isinstance(info.value.__cause__, EngineRequestError)
    assert thunk.state is ThunkState.FAILED


async def _no_sleep(seconds: float) -> None:
    return None


def test_transient_errors_exhaust_attempts() -> None:
    engine = ScriptedEngine(lambda r: (_ for _ in ()).throw(TransientEngineError("503")))
    thunk = generate(Op(inputs=["x"], label="t"))
    with pytest.raises(NodeFailedError, match="503"):
        run(thunk, engine=engine, retry=RetryPolicy(attempts=4, sleep=_no_sleep), progress=False)
    assert engine.calls == 4


def test_timeout_cancels_only_the_slow_node() -> None:
    answered: list[str] = []
    engine = ScriptedEngine(
        lambda r: answered.append(r.text) or r.text,
        latency=lambda r: 5.0 if r.text.startswith("slow") else 0.01,
    )
    slow = generate(Op(inputs=["x"], label="slow"))
    fast = [generate(Op(inputs=[str(i)], label="fast")) for i in range(3)]
    result = run(
        slow,
        *fast,
        engine=engine,
        timeout=0.3,
        retry=RetryPolicy(attempts=1),
        on_error="continue",
        progress=False,
    )
    assert not any(a.startswith("slow") for a in answered)  # cancelled before it answered
    assert len(answered) == 3 and engine.in_flight == 0
    assert slow.state is ThunkState.FAILED
    assert isinstance(slow.error, TransientEngineError) and "timed out" in str(slow.error)
    assert all(t.state is ThunkState.DONE for t in fast)
    assert [o.path for o in result.failed] == ["roots[0]:generate(Op)"]


def test_raise_cancels_in_flight_work_and_keeps_finished_results() -> None:
    def answer(request: Request) -> str:
        if request.text.startswith("boom"):
            raise EngineRequestError("boom")
        return "ok"

    engine = ScriptedEngine(
        answer, latency=lambda r: {"boom": 0.05, "slow": 5.0}.get(r.text.split(":")[0], 0.0)
    )
    done = generate(Op(inputs=["a"], label="quick"))
    slow = generate(Op(inputs=["b"], label="slow"))
    boom = generate(Op(inputs=["c"], label="boom"))
    after = generate(Op(inputs=[boom], label="after"))
    with pytest.raises(NodeFailedError) as info:
        run(done, slow, after, engine=engine, progress=False)
    assert info.value.path == "roots[2]:generate(Op).action.parts()[0]"
    assert done.value == "ok"
    assert slow.state is ThunkState.CANCELLED
    assert boom.state is ThunkState.FAILED
    assert after.state is ThunkState.PENDING
    partial = info.value.run
    assert partial is not None and partial.status == "cancelled"


def test_dynamic_fan_out_with_count_known_at_run_time() -> None:
    engine = ScriptedEngine(lambda r: f"<{r.text.split('|')[1].strip()}>")

    class Summarise(Component[str]):
        template = "summarise | {chunk}"
        chunk: Span

    @task
    def split(text: str) -> list[str]:
        return [part.strip() for part in text.split(".") if part.strip()]

    @task
    def summarise_each(chunks: list[str]) -> list[ModelOutputThunk[str]]:
        return [generate(Summarise(chunk=c)) for c in chunks]

    @task
    def combine(summaries: list[str]) -> str:
        return " + ".join(summaries)

    source = generate(Op(inputs=["doc"], label="src"))
    doc_engine = ScriptedEngine("One. Two. Three. Four.")
    source = generate(Op(inputs=["doc"], label="src"), engine=doc_engine)
    result_thunk = combine(summarise_each(split(source)))
    result = run(result_thunk, engine=engine, progress=False)
    assert result_thunk.value == "<One> + <Two> + <Three> + <Four>"
    assert result.dynamic_nodes > 0
    assert result.generations == 5


def test_nested_dynamic_expansion_two_levels() -> None:
    engine = ScriptedEngine(lambda r: r.text.upper())

    @task
    def inner(word: str) -> list[ModelOutputThunk[str]]:
        return [generate(CBlock(ch)) for ch in word]

    @task
    def outer(words: list[str]) -> list[ModelOutputThunk[Any]]:
        return [inner(w) for w in words]

    top = outer(["ab", "c"])
    result = run(top, engine=engine, progress=False)
    assert top.parsed == [["A", "B"], ["C"]]
    assert result.generations == 3
    assert result.status == "done"


def test_task_result_is_a_part_rendered_with_str() -> None:
    engine = ScriptedEngine(lambda r: r.text)

    @task
    async def count(words: list[str]) -> int:
        await anyio.sleep(0)
        return len(words)

    n = count(["a", "b", "c"])
    final = generate(Op(inputs=[n], label="count"))
    run(final, engine=engine, progress=False)
    assert final.value == "count: 3"


def test_failing_task_names_its_path() -> None:
    @task
    def explode() -> str:
        raise ValueError("nope")

    top = generate(Op(inputs=[explode()], label="t"))
    with pytest.raises(
        NodeFailedError, match=r"generate\(Op\)\.action\.parts\(\)\[0\]: ValueError"
    ):
        run(top, engine=ScriptedEngine("x"), progress=False)


def test_a_run_of_tasks_walks_no_span_path_until_one_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A span path is a walk up to a root: made for every task, a chain of n tasks
    would walk n**2 / 2 steps (a 100k-task graph ran 2.7x slower per node than a
    10k one). Untraced, a run makes none until something needs one (a failure, an
    interrupt); traced, each step of the graph is made once."""
    made: list[int] = []
    step = PathTracker.step

    def counted(self: PathTracker, frame: int) -> str:
        made.append(frame)
        return step(self, frame)

    monkeypatch.setattr(PathTracker, "step", counted)

    @task
    def link(previous: str) -> str:
        return previous[-8:] + "+"

    def chain(length: int) -> Any:
        last = link("start")
        for _ in range(length - 1):
            last = link(last)
        return last

    assert run(chain(300), engine=ScriptedEngine("x"), trace=False, progress=False).status == "done"
    assert made == []

    done = run(chain(300), engine=ScriptedEngine("x"), trace=True, progress=False)
    assert done.status == "done"
    assert len(made) == len(set(made)) == 300  # each task's frame, once

    @task
    def fail(previous: str) -> str:
        raise ValueError("nope")

    with pytest.raises(NodeFailedError, match=r"\)\.inputs\[0\]\.inputs\[0\]: ValueError: nope"):
        run(link(link(fail("start"))), engine=ScriptedEngine("x"), trace=False, progress=False)


def test_run_works_inside_a_running_loop() -> None:
    thunk = generate(Op(inputs=["x"], label="loop"))

    async def main() -> str:
        result = run(thunk, engine=ScriptedEngine("inside"), progress=False)
        return str(result.output.value)

    assert anyio.run(main) == "inside"


def test_arun_and_awaiting_a_thunk() -> None:
    engine = ScriptedEngine(lambda r: "v")
    a = generate(Op(inputs=["x"], label="a"))

    async def main() -> None:
        result = await arun(a, engine=engine, progress=False)
        assert result.output is a and await a == "v"

    anyio.run(main)


def test_completed_thunks_are_reused_not_recomputed() -> None:
    engine = ScriptedEngine(lambda r: "v")
    a = generate(Op(inputs=["x"], label="a"))
    b = generate(Op(inputs=[a], label="b"))
    run(a, engine=engine, progress=False)
    assert engine.calls == 1
    run(b, engine=engine, progress=False)
    assert engine.calls == 2


def test_a_thunk_finished_between_compile_and_run_is_reused() -> None:
    """A first run starts from what compile() recorded, unless a thunk of the graph
    finished meanwhile (another graph ran it): then every node's state is worked out."""
    engine = ScriptedEngine(lambda r: r.text.upper())
    a = generate(Op(inputs=["x"], label="a"))
    b = generate(Op(inputs=[a], label="b"))
    c = generate(Op(inputs=[b, "y"], label="c"))
    later = compile(c)
    run(a, engine=engine, progress=False)
    assert engine.calls == 1
    result = run(later, engine=engine, progress=False)
    assert engine.calls == 3 and result.generations == 2 and result.nodes_run == 2
    assert c.value == "C: B: A: X\nY"
    again = run(compile(c), engine=engine, progress=False)  # every thunk done: nothing runs
    assert engine.calls == 3 and again.nodes_run == 0 and again.status == "done"


def test_equal_declarations_share_one_generation() -> None:
    engine = ScriptedEngine(lambda r: "same")
    a1 = generate(Op(inputs=["x"], label="a"))
    a2 = generate(Op(inputs=["x"], label="a"))
    run(a1, a2, engine=engine, progress=False)
    assert engine.calls == 1 and a1.value == a2.value == "same"


def test_events_cover_a_run() -> None:
    events: list[Event] = []
    engine = ScriptedEngine(lambda r: "v")
    thunk = generate(Op(inputs=["x"], label="a"))
    run(thunk, engine=engine, listeners=[events.append], progress=False)
    names = [type(e).__name__ for e in events]
    assert names.count("NodeQueued") == 3  # the block, the Op component, the generation
    assert "NodeStarted" in names and "GenerationRecord" in names and "NodeFinished" in names


def test_skipped_event_carries_reason() -> None:
    engine = ScriptedEngine(lambda r: (_ for _ in ()).throw(EngineRequestError("no")))
    bad = generate(Op(inputs=["x"], label="bad"))
    child = generate(Op(inputs=[bad], label="child"))
    result = run(child, engine=engine, on_error="continue", progress=False, keep_events=True)
    skipped = [e for e in result.events if isinstance(e, NodeSkipped)]
    assert skipped and "failed: EngineRequestError: no" in skipped[0].reason


def test_bad_policy_values() -> None:
    thunk = generate(Op(inputs=["x"], label="a"))
    engine = ScriptedEngine("v")
    with pytest.raises(ValueError, match="max_concurrency"):
        run(thunk, engine=engine, max_concurrency=0, progress=False)
    with pytest.raises(ValueError, match="timeout"):
        run(thunk, engine=engine, timeout=-1, progress=False)
    with pytest.raises(ValueError, match="on_error"):
        run(thunk, engine=engine, on_error="ignore", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(TypeError, match="either one compiled SpanGraph"):
        run(compile(thunk), thunk, engine=engine)


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys
    from spangraph import CBlock, generate, run
    from spangraph.engines import ScriptedEngine
    from spangraph.events import NodeFinished

    engine = ScriptedEngine(
        lambda r: "done " + r.text, latency=lambda r: 0.05 if r.text < "q3" else 30.0
    )
    thunks = [generate(CBlock(f"q{i}")) for i in range(6)]

    def on_event(event):
        if isinstance(event, NodeFinished) and sum(t.done for t in thunks) == 3:
            print("READY", flush=True)

    try:
        run(*thunks, engine=engine, max_concurrency=6, listeners=[on_event], progress=False)
    except KeyboardInterrupt:
        states = [t.state.value for t in thunks]
        print("STATES", " ".join(states), flush=True)
        print("VALUES", " | ".join(t.value for t in thunks if t.done), flush=True)
        sys.exit(0)
    print("FINISHED", flush=True)
    """
)


def test_keyboard_interrupt_leaves_completed_results_readable() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A child inherits an ignored SIGINT (some earlier test's library may leave
        # this process ignoring it): give it Python's own Ctrl-C, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read() if proc.stderr else line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    states = next(x for x in out.splitlines() if x.startswith("STATES")).split()[1:]
    assert states == ["done"] * 3 + ["cancelled"] * 3
    assert "done q0 | done q1 | done q2" in out


def test_progress_bar_counts_work_nodes_and_grows_with_dynamic_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Piece(Component[str]):
        template = "piece {chunk}"
        chunk: Span

    @task
    def fan_out(text: str) -> list[ModelOutputThunk[str]]:
        return [generate(Piece(chunk=CBlock(word))) for word in text.split()]

    source = generate(CBlock("source"), engine=ScriptedEngine("a b c"))
    result = run(fan_out(source), engine=ScriptedEngine("x"), progress=True)
    assert result.status == "done" and result.dynamic_nodes > 0
    shown = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    # Two compiled work nodes (the source, the task), then three generations the task added.
    assert re.search(r"\b5/5\b", shown[-1]), shown[-1]
    assert "running" in shown[-1]


def test_cancelling_the_caller_cancels_handed_off_generations() -> None:
    import asyncio

    engine = ScriptedEngine("ok", latency=lambda r: 5.0 if r.text.startswith("slow") else 0.01)
    quick = generate(Op(inputs=["a"], label="quick"))
    slow = [generate(Op(inputs=[f"b{i}"], label="slow")) for i in range(3)]
    after = generate(Op(inputs=[quick, *slow], label="after"))
    leftover: list[asyncio.Task[Any]] = []

    async def main() -> None:
        with anyio.move_on_after(0.3):
            await arun(after, engine=engine, progress=False)
        current = asyncio.current_task()
        leftover.extend(t for t in asyncio.all_tasks() if t is not current)

    anyio.run(main)
    assert quick.value == "ok"  # finished before the cancel: kept
    assert [t.state for t in slow] == [ThunkState.CANCELLED] * 3
    assert after.state is ThunkState.PENDING
    assert leftover == []  # every handed-off generation was waited for


def test_a_retried_generation_handed_off_from_a_retry_is_waited_for() -> None:
    calls = {"n": 0}

    def flaky(request: Request) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientEngineError("once")
        return "fine"

    engine = ScriptedEngine(flaky, latency=0.02)
    thunk = generate(Op(inputs=["x"], label="flaky"))
    result = run(
        thunk, engine=engine, retry=RetryPolicy(attempts=3, sleep=_no_sleep), progress=False
    )
    assert thunk.value == "fine" and result.attempts == 2 and result.status == "done"


def test_an_internal_error_in_a_handed_off_generation_is_raised_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spangraph.graph import _scheduler

    def broken(self: Any, node_id: str, thunk: Any) -> None:
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(_scheduler.Scheduler, "_generation_done", broken)
    thunk = generate(Op(inputs=["x"], label="n"))
    with pytest.raises(RuntimeError, match="scheduler bug"):
        run(thunk, engine=ScriptedEngine("ok", latency=0.01), progress=False)


def test_two_runs_of_one_graph_at_once_on_different_engines_never_meet() -> None:
    """Run state is the run's: a graph another run holds runs on a copy of its spans
    (fresh thunks, equal node ids), so each run gets its own engine's results."""

    @task
    def fan(word: str) -> Any:
        return [generate(CBlock(f"{word} {i}")) for i in range(3)]

    first_engine = ScriptedEngine(lambda r: "A:" + r.text, latency=0.03)
    second_engine = ScriptedEngine(lambda r: "B:" + r.text, latency=0.02)
    top = generate(Op(inputs=[fan("w"), "x"], label="top"))
    graph = compile(top)
    runs: dict[str, Any] = {}

    async def one(name: str, engine: ScriptedEngine, delay: float) -> None:
        await anyio.sleep(delay)
        runs[name] = await arun(graph, engine=engine, progress=False)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "first", first_engine, 0)
            tg.start_soon(one, "second", second_engine, 0.01)  # the first is under way

    anyio.run(main)
    first, second = runs["first"], runs["second"]
    assert first.status == second.status == "done"
    assert first.output is top and first.graph is graph
    assert second.output is not top and second.graph is not graph  # a copy of the spans
    assert second.graph.roots == graph.roots  # the same program: equal node ids
    assert top.value.startswith("A:top") and second.output.value.startswith("B:top")
    assert "A:w 0" in top.value and "B:w 0" in second.output.value
    assert first_engine.calls == second_engine.calls == 4
    rerun = run(graph, engine=second_engine, progress=False)  # done: nothing to compute
    assert rerun.generations == 0 and second_engine.calls == 4


def test_a_copy_keeps_what_was_done_before() -> None:
    engine = ScriptedEngine(lambda r: "v:" + r.text)
    done = generate(CBlock("early"))
    run(done, engine=engine, progress=False)
    later = generate(Op(inputs=[done], label="later"))
    graph = compile(later)
    copy = graph.instance()
    assert copy.roots == graph.roots
    result = run(copy, engine=engine, progress=False)
    assert result.generations == 1 and engine.calls == 2  # "early" was not computed again
    assert later.state is ThunkState.PENDING  # the original is untouched


def test_arun_under_trio() -> None:
    """On trio every generation runs as a task of the run's task group (no asyncio
    tasks): fan-out, a retry, a dynamic task and a cancelled run all work there too."""
    pytest.importorskip("trio")
    calls = {"flaky": 0}

    def answer(request: Request) -> str:
        if request.text.startswith("flaky") and calls["flaky"] == 0:
            calls["flaky"] += 1
            raise TransientEngineError("once")
        return digest(request.text)

    engine = ScriptedEngine(answer, latency=0.01)
    leaves = [generate(Op(inputs=[f"leaf {i}"], label="leaf")) for i in range(4)]
    flaky = generate(Op(inputs=leaves, label="flaky"))

    @task
    def fan(text: str) -> list[ModelOutputThunk[str]]:
        return [generate(Op(inputs=[text, str(i)], label="more")) for i in range(3)]

    more = fan(flaky)
    policy = RetryPolicy(attempts=2, sleep=_no_sleep)
    result = anyio.run(
        lambda: arun(more, engine=engine, retry=policy, progress=False), backend="trio"
    )
    assert result.status == "done" and result.generations == 4 + 1 + 3
    assert result.attempts == 4 + 2 + 1 + 3  # the flaky node twice, the task once
    assert all(t.state is ThunkState.DONE for t in [*leaves, flaky])

    slow = generate(Op(inputs=["s"], label="slow"))

    async def cancelled() -> None:
        with anyio.move_on_after(0.05):
            await arun(slow, engine=ScriptedEngine("x", latency=5.0), progress=False)

    anyio.run(cancelled, backend="trio")
    assert slow.state is ThunkState.CANCELLED


@given(dags)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_take_fresh_agrees_with_add_nodes(dag: Any) -> None:
    """A run whose work is all to do starts from what ``compile()`` recorded
    (``Scheduler._take_fresh``, the fast path); its state, events and claims
    equal what ``_add_nodes`` (the reference) works out node by node."""
    from spangraph.events import EventBus, NodeQueued
    from spangraph.graph._scheduler import Scheduler

    n, picks = dag
    thunks, _ = build(n, picks)

    @task
    def join(first: str, last: str) -> str:
        return first + last

    roots = [join(thunks[0], thunks[-1]), *thunks]
    states = []
    for fast in (True, False):
        graph = compile(*roots)
        bus = EventBus()
        queued: list[Event] = []
        bus.subscribe(queued.append)
        scheduler = Scheduler(
            graph,
            engine=lambda: ScriptedEngine("unused"),
            max_concurrency=None,
            retry=RetryPolicy(),
            timeout=None,
            on_error="raise",
            bus=bus,
        )
        scheduler._listen()
        if fast:
            assert scheduler._take_fresh(graph)
        else:
            scheduler._add_nodes(list(graph.nodes()))
        states.append(
            (
                [node.id for node in scheduler._by_order],
                list(scheduler._status),
                list(scheduler._waiting),
                list(scheduler._attempt_of),
                list(scheduler._ready),
                scheduler._done,
                [(e.node_id, e.kind) for e in queued if isinstance(e, NodeQueued)],
                [thunk._claimed for thunk in graph._work_thunks],
            )
        )
        scheduler._settle()  # lets the thunks go, for the next compile's run
        scheduler.close()
    assert states[0] == states[1]


def test_generations_inline_handed_off_and_whole_agree() -> None:
    """A generation ends one of three ways: inline (an instant engine, a memo hit),
    started inline then handed off (an engine that waits), or handed off whole
    (trio). The same graph, run twice over one memo, ends alike all three ways:
    outputs, failures, skips, and the run's counts (hits and misses too)."""
    pytest.importorskip("trio")
    from spangraph.cache import CachePolicy, MemoryStore

    picks = [[], [0], [0, 1], [1], [2, 3], [4], [0]]

    def answer(request: Request) -> str:
        if request.text.startswith("n3:"):
            raise EngineRequestError("n3 refused")
        return digest(request.text)

    def outcome(backend: str, latency: float) -> list[Any]:
        store = MemoryStore()
        seen: list[Any] = []
        for _ in range(2):  # the second run is served from the memo
            thunks, _ = build(len(picks), picks)
            engine = ScriptedEngine(answer, latency=latency)
            call = partial(
                arun,
                *thunks,
                engine=engine,
                cache=(store, CachePolicy("always")),
                on_error="continue",
                progress=False,
            )
            result = anyio.run(call, backend=backend)
            seen.append(
                (
                    result.status,
                    result.generations,
                    result.cache_hits,
                    result.cache_misses,
                    result.attempts,
                    result.nodes_run,
                    [t.state for t in thunks],
                    [t.value if t.state is ThunkState.DONE else None for t in thunks],
                    sorted(o.node_id for o in result.failed),
                    sorted(o.node_id for o in result.skipped),
                )
            )
        return seen

    inline = outcome("asyncio", 0.0)
    assert inline[0][3] > 0 and inline[1][2] > 0  # misses, then hits
    assert outcome("asyncio", 0.002) == inline
    assert outcome("trio", 0.0) == inline


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_timeout_fails_generations_tasks_and_samplers_alike(backend: str) -> None:
    """Every attempt that waits in a task ends through one rule: a timed-out one is
    a transient failure, whatever kind of node it is, on either backend."""
    if backend == "trio":
        pytest.importorskip("trio")
    from spangraph import Instruction, Requirement, sample
    from spangraph.sampling import RejectionSampler

    @task
    async def slow_task(text: str) -> str:
        await anyio.sleep(5.0)
        return text

    engine = ScriptedEngine("ok", latency=lambda r: 5.0 if "slow" in r.text else 0.0)
    generation = generate(Op(inputs=["x"], label="slow"))
    sampler = sample(Instruction("slow"), RejectionSampler([Requirement("Any.", validate=bool)]))
    call = partial(
        arun,
        generation,
        slow_task("y"),
        sampler,
        engine=engine,
        timeout=0.2,
        retry=RetryPolicy(attempts=1),
        on_error="continue",
        progress=False,
    )
    result = anyio.run(call, backend=backend)
    assert len(result.failed) == 3
    for outcome in result.failed:
        assert isinstance(outcome.error, TransientEngineError), outcome
        assert str(outcome.error) == "timed out after 0.2 s"
