"""``interrupt()`` in a task pauses its branch; ``resume`` answers it and goes on from the memo."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import spangraph.tracing
from spangraph import (
    Instruction,
    InterruptError,
    generate,
    interrupt,
    options,
    run,
    task,
)
from spangraph.cache import MemoryStore, SQLiteStore
from spangraph.engines import ScriptedEngine

ROOT = pathlib.Path(__file__).resolve().parents[2]


PROMPTS: list[str] = []


def engine() -> ScriptedEngine:
    def reply(request: Any) -> str:
        PROMPTS.append(request.prompt.text)
        return f"out[{request.prompt.text[-12:]}]"

    return ScriptedEngine(reply)


class Review(BaseModel):
    approved: bool
    summary: str


@task
def review(summary: str) -> str:
    answer = interrupt("Approve or edit this summary?", Review)
    return answer.summary if answer.approved else "rejected"


def program() -> tuple[Any, Any, Any]:
    with options(temperature=0):  # deterministic: memoised
        summary = generate(Instruction(description="Summarise the licence"))
        reviewed = review(summary)
        final = generate(Instruction(description="Use it", grounding=[reviewed]))
        independent = generate(Instruction(description="Something else"))
    return summary, final, independent


def test_an_interrupt_pauses_its_branch_and_the_rest_finishes() -> None:
    summary, final, independent = program()
    eng = engine()
    first = run(final, independent, engine=eng, progress=False)
    assert first.status == "interrupted"
    assert summary.state.name == "DONE" and independent.state.name == "DONE"
    assert final.state.name == "PENDING"
    assert eng.calls == 2  # the summary and the independent generation
    (asked,) = first.interrupts
    assert asked.question == "Approve or edit this summary?"
    assert asked.label == "task(review)"
    assert asked.path == "roots[0]:generate(Instruction).action.parts()[1]"
    assert asked.schema["properties"]["approved"] == {"title": "Approved", "type": "boolean"}

    second = first.resume({asked.id: {"approved": True, "summary": "edited"}})
    assert second.status == "done"
    assert eng.calls == 3  # only the generation after the review
    assert second.engine_calls == 1
    assert final.state.name == "DONE"
    assert "edited" in PROMPTS[-1]  # the person's edit reached the next generation


def test_resume_serves_done_generations_from_the_memo_in_a_fresh_program() -> None:
    store = MemoryStore()
    eng = engine()
    _, final, independent = program()
    first = run(final, independent, engine=eng, cache=store, progress=False)
    (asked,) = first.interrupts
    assert eng.calls == 2
    # The same program declared again (new thunks): done generations come from the memo.
    _, final2, independent2 = program()
    second = run(
        final2,
        independent2,
        engine=eng,
        cache=store,
        progress=False,
        resume={asked.id: Review(approved=False, summary="x")},
    )
    assert second.status == "done"
    assert second.cache_hits == 2
    assert eng.calls == 3
    assert final2.state.name == "DONE"


def test_a_wrong_answer_is_refused_before_anything_runs() -> None:
    eng = engine()
    _, final, independent = program()
    first = run(final, independent, engine=eng, progress=False)
    (asked,) = first.interrupts
    with pytest.raises(InterruptError) as info:
        first.resume({asked.id: {"approved": "perhaps"}})
    assert info.value.path == asked.path
    assert asked.path in str(info.value)
    assert info.value.interrupt_id == asked.id
    assert eng.calls == 2


def test_an_unknown_interrupt_id_is_refused() -> None:
    _, final, _ = program()
    with pytest.raises(InterruptError, match="no run"):
        run(final, engine=engine(), progress=False, resume={"int-nope": "yes"})


def test_interrupt_outside_a_task_is_an_interrupt_error() -> None:
    with pytest.raises(InterruptError, match="inside a @task"):
        interrupt("Who?")


def test_async_and_thread_tasks_interrupt_and_resume() -> None:
    calls: list[str] = []

    @task
    async def approve(x: str) -> str:
        calls.append("async")
        answer: str = interrupt(f"ok {x}?", Literal["yes", "no"])
        return answer

    @task(thread=True)
    def count(x: str) -> int:
        calls.append("thread")
        n: int = interrupt("how many?", int)
        return n * 2

    a, b = approve("a"), count("b")
    first = run(a, b, engine=engine(), progress=False)
    assert first.status == "interrupted"
    ids = {i.question: i.id for i in first.interrupts}
    assert set(ids) == {"ok a?", "how many?"}
    # One answer: the other branch stays interrupted.
    second = first.resume({ids["ok a?"]: "yes"})
    assert second.status == "interrupted"
    assert a.value == "yes"
    assert [i.question for i in second.interrupts] == ["how many?"]
    third = second.resume({ids["how many?"]: 21})
    assert third.status == "done"
    assert b.parsed == 42
    assert calls.count("async") == 2  # asked, then answered (not run again after)
    assert calls.count("thread") == 3


def test_several_interrupts_in_one_task_are_asked_in_turn() -> None:
    @task
    def two() -> str:
        first: str = interrupt("first?")
        second: str = interrupt("second?")
        return first + second

    node = two()
    r1 = run(node, progress=False)
    (q1,) = r1.interrupts
    r2 = r1.resume({q1.id: "a"})
    (q2,) = r2.interrupts
    assert q2.question == "second?"
    r3 = r2.resume({q2.id: "b"})
    assert r3.status == "done" and node.value == "ab"


def test_interrupts_inside_a_dynamic_fan_out() -> None:
    @task
    def check(item: str) -> str:
        verdict: str = interrupt(f"keep {item}?", Literal["keep", "drop"])
        return f"{item}:{verdict}"

    @task
    def fan_out(items: list[str]) -> list[Any]:
        return [check(i) for i in items]

    eng = engine()
    root = fan_out(["a", "b", "c"])
    other = generate(Instruction(description="independent"))
    first = run(root, other, engine=eng, progress=False)
    assert first.status == "interrupted"
    assert sorted(i.question for i in first.interrupts) == ["keep a?", "keep b?", "keep c?"]
    assert other.state.name == "DONE" and eng.calls == 1
    answers = {i.id: ("drop" if "b" in i.question else "keep") for i in first.interrupts}
    second = first.resume(answers)
    assert second.status == "done", second.summary()
    assert root.parsed == ["a:keep", "b:drop", "c:keep"]
    assert eng.calls == 1  # the independent generation was reused


def test_the_interrupted_span_is_unset_with_its_id_and_no_question_without_capture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spangraph.tracing, "capture_content", None)
    _, final, independent = program()
    first = run(final, independent, engine=engine(), progress=False)
    (asked,) = first.interrupts
    assert first.log is not None
    (node,) = first.log.filter(kind="task")
    assert node.status == "interrupted"
    assert node.attributes["spangraph.interrupt.id"] == asked.id
    assert node.error is None
    assert "spangraph.interrupt.question" not in node.attributes
    every = [str(v) for r in first.log.records for v in r.attributes.values()]
    assert not any("Approve" in v for v in every)


def test_with_capture_on_the_span_has_the_question(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    _, final, independent = program()
    first = run(final, independent, engine=engine(), progress=False)
    assert first.log is not None
    (node,) = first.log.filter(kind="task")
    assert node.attributes["spangraph.interrupt.question"] == "Approve or edit this summary?"


def test_resume_in_another_process_from_a_sqlite_store(tmp_path: pathlib.Path) -> None:
    """The interrupts and answers live in the memo store: a second process resumes."""
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            from spangraph import Instruction, generate, interrupt, options, run, task
            from spangraph.cache import SQLiteStore
            from spangraph.engines import ScriptedEngine

            @task
            def review(summary: str) -> str:
                verdict = interrupt("approve?", bool)
                return "ok" if verdict else "no"

            eng = ScriptedEngine(lambda r: "summary")
            with options(temperature=0):
                final = generate(Instruction(description="use", grounding=[review(
                    generate(Instruction(description="summarise")))]))
            answers = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
            result = run(final, engine=eng, cache=SQLiteStore(sys.argv[1]), progress=False,
                         resume=answers)
            print(json.dumps({"status": result.status, "calls": eng.calls,
                              "ids": [i.id for i in result.interrupts]}))
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    db = str(tmp_path / "memo.sqlite")

    def call(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, str(script), db, *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        import json

        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    first = call()
    assert first["status"] == "interrupted" and first["calls"] == 1
    (interrupt_id,) = first["ids"]
    import json

    wrong = subprocess.run(
        [sys.executable, str(script), db, json.dumps({interrupt_id: "yes"})],
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "InterruptError" in wrong.stderr
    second = call(json.dumps({interrupt_id: True}))
    assert second == {"status": "done", "calls": 1, "ids": []}  # the summary: from the memo
    assert SQLiteStore(db).get("spangraph.answer:" + interrupt_id) == {"answer": True}


def test_the_resumed_runs_span_links_to_the_interrupted_runs_span() -> None:
    _, final, independent = program()
    first = run(final, independent, engine=engine(), progress=False)
    (asked,) = first.interrupts
    assert first.log is not None and first.log.run is not None
    assert (asked.trace_id, asked.span_id) == (first.log.run.trace_id, first.log.run.span_id)
    second = first.resume({asked.id: {"approved": True, "summary": "s"}})
    assert second.log is not None and second.log.run is not None
    assert (first.log.run.trace_id, first.log.run.span_id, {"spangraph.edge.kind": "resume"}) in [
        (t, s, dict(a)) for t, s, a in second.log.run.links
    ]


def test_interrupt_and_resume_under_trio() -> None:
    pytest.importorskip("trio")
    import anyio

    from spangraph import arun

    @task
    async def confirm(x: str) -> str:
        answer: str = interrupt(f"ok {x}?")
        return answer.upper()

    eng = engine()
    with options(temperature=0):
        node = confirm(generate(Instruction(description="draft")))

    async def both() -> tuple[Any, Any]:
        first = await arun(node, engine=eng, progress=False)
        (asked,) = first.interrupts
        return first, await first.aresume({asked.id: "yes"})

    first, second = anyio.run(both, backend="trio")
    assert first.status == "interrupted" and second.status == "done"
    assert node.value == "YES" and eng.calls == 1


# -- ids that hold across processes, and a bounded registry ---------------------------


class Opaque:
    """No JSON form: a task given one gets its node id from the repr (an address)."""


@task
def ask_about(thing: Opaque) -> str:
    return str(interrupt("Go on?"))


@task
def make(thing: Opaque) -> str:
    return "made"


@task
def confirm(text: str) -> bool:
    return bool(interrupt(f"Keep {text}?", bool))


def test_an_interrupt_in_a_task_whose_arguments_json_cannot_hold_is_refused() -> None:
    from spangraph import NodeFailedError

    cases = (
        (ask_about(Opaque()), "ask_about", "ask_about"),
        (confirm(make(Opaque())), "confirm", "make"),  # upstream: its id is in confirm's
    )
    for root, path, culprit in cases:
        with pytest.raises(NodeFailedError) as failure:
            run(root, engine=ScriptedEngine("x"), progress=False)
        error = failure.value.error
        assert isinstance(error, InterruptError)
        assert "not JSON data" in str(error) and f"task({culprit}) takes" in str(error)
        assert path in error.path  # the span path of the task that asked
    with pytest.raises(NodeFailedError, match="not JSON data"):  # a set has no stable order
        run(confirm_all({"b", "a"}), engine=ScriptedEngine("x"), progress=False)
    # JSON data all the way up: asked, with an id (what the rest of this file tests).
    paused = run(confirm("the summary"), engine=ScriptedEngine("x"), progress=False)
    assert paused.status == "interrupted" and len(paused.interrupts) == 1


class Draft(BaseModel):
    title: str
    words: int


@task
def confirm_all(items: Any) -> bool:
    return bool(interrupt(f"Keep {sorted(items)}?", bool))


@task
def approve_draft(draft: Draft) -> bool:
    return bool(interrupt(f"Publish {draft.title}?", bool))


def test_a_task_given_a_pydantic_model_interrupts_with_an_id_another_process_shares() -> None:
    """A model's JSON form, tagged with its type, makes the node id (not its repr)."""
    paused = run(approve_draft(Draft(title="Licence", words=9)), progress=False)
    (asked,) = paused.interrupts
    script = textwrap.dedent(
        """
        from spangraph import run
        from tests.graph.test_interrupt import Draft, approve_draft

        (asked,) = run(approve_draft(Draft(title="Licence", words=9)), progress=False).interrupts
        print(asked.id)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == asked.id


def test_the_interrupts_a_process_keeps_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from spangraph.graph import _interrupt

    monkeypatch.setattr(_interrupt, "SEEN_LIMIT", 3)
    asked = [
        _interrupt.Interrupt(
            id=f"int-bounded-{i}", question="Go on?", path="p", label="t", schema={"type": "string"}
        )
        for i in range(5)
    ]
    store = MemoryStore()
    _interrupt.remember(asked, store)
    assert list(_interrupt._seen) == ["int-bounded-2", "int-bounded-3", "int-bounded-4"]
    # The oldest is still found in the run's memo store; without it, not at all.
    checked, _ = _interrupt.checked_answers({"int-bounded-0": "yes"}, store)
    assert checked == {"int-bounded-0": "yes"}
    with pytest.raises(InterruptError, match="no run of this process"):
        _interrupt.checked_answers({"int-bounded-1": "yes"}, None)
