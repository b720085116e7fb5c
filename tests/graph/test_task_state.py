"""A task's body declares its generations under the ``with`` blocks around the task's
call (options, a chat history), whether the function is sync, async or in a thread."""

from __future__ import annotations

from typing import Any

import pytest

from spangraph import CBlock, ChatHistory, compile, generate, options, run, task
from spangraph.engines import Request, ScriptedEngine


def recorder() -> tuple[ScriptedEngine, list[Request]]:
    seen: list[Request] = []

    def reply(request: Request) -> str:
        seen.append(request)
        return "ok"

    return ScriptedEngine(reply), seen


@task
def sync_body(text: str) -> Any:
    return generate(CBlock(f"about {text}"))


@task
async def async_body(text: str) -> Any:
    return generate(CBlock(f"about {text}"))


@task(thread=True)
def thread_body(text: str) -> Any:
    return generate(CBlock(f"about {text}"))


@pytest.mark.parametrize(
    "body", [sync_body, async_body, thread_body], ids=["sync", "async", "thread"]
)
def test_a_task_body_declares_under_the_state_of_its_call(body: Any) -> None:
    engine, seen = recorder()
    with options(max_tokens=5, temperature=0):
        inside = body("cats")
    outside = body("dogs")
    run(inside, outside, engine=engine, progress=False)
    by_prompt = {r.prompt.text: r.options for r in seen}
    assert by_prompt["about cats"]["max_tokens"] == 5
    assert "max_tokens" not in by_prompt["about dogs"] or by_prompt["about dogs"]["max_tokens"] != 5


def test_a_chat_around_a_task_call_is_the_prefix_of_its_generations() -> None:
    engine, seen = recorder()
    with ChatHistory().append("system", "Be brief."):
        reply = sync_body("cats")
    run(reply, engine=engine, progress=False)
    assert seen[0].text == "system: Be brief.\nuser: about cats\nassistant:"


def test_the_state_of_the_call_is_part_of_the_task_s_identity() -> None:
    with options(max_tokens=5):
        five = sync_body("cats")
    with options(max_tokens=6):
        six = sync_body("cats")
    plain = sync_body("cats")
    graph = compile(five, six, plain)
    assert len({graph.id_of(five), graph.id_of(six), graph.id_of(plain)}) == 3
