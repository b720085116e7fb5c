"""``examples/review_agent.py``: two tools over the Apache-2.0 text, and a review with
``interrupt()``; on a scripted model (fast) and, as two processes, on the embedded one."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from spangraph import run
from spangraph.cache import MemoryStore
from spangraph.engines import ScriptedEngine

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "review_agent.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("review_agent", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["review_agent"] = module  # (its annotations are resolved through it)
    spec.loader.exec_module(module)
    return module


def model(request: Any) -> str:
    text = request.prompt.text
    if "Tool result (count_words" in text:
        return json.dumps({"answer": "Contributors grant a patent license."})
    if "Tool result (search_clause" in text:
        return ScriptedEngine.tool_call("count_words", text="a patent license")
    if "Question about" in text:
        return ScriptedEngine.tool_call("search_clause", keyword="patent")
    return "NOTICE: " + text.splitlines()[0]


def test_the_review_agent_pauses_after_its_tool_rounds_and_resumes_from_the_memo() -> None:
    example = load()
    store = MemoryStore()
    engine = ScriptedEngine(model)
    first = run(example.build(), engine=engine, cache=store, progress=False)
    assert first.status == "interrupted" and engine.calls == 3
    assert first.log is not None
    tools = sorted(n.label for n in first.log.filter(kind="tool"))
    assert tools == ["tool(count_words)", "tool(search_clause)"]
    assert [n.label for n in first.log.filter(status="interrupted")] == ["task(review)"]
    (asked,) = first.interrupts
    notice = example.build()  # declared again, as another process would
    second = run(
        notice,
        engine=engine,
        cache=store,
        progress=False,
        resume={asked.id: {"approved": False, "text": "Edited by a person."}},
    )
    assert second.status == "done"
    assert engine.calls == 4 and second.cache_hits == 3  # only the notice is new
    assert notice.value == "NOTICE: Reviewed finding: Edited by a person."


@pytest.mark.real
def test_the_review_agent_on_the_embedded_engine_in_two_processes(
    tmp_path: pathlib.Path, spangraph_home: pathlib.Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPANGRAPH_HOME": str(spangraph_home)}

    def call(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = call()
    assert first.startswith("interrupted: ") and "waiting: Approve this finding" in first
    second = call("--edit", "The licence grants a patent licence.")
    assert second.startswith("done: ") and "(1 engine calls)" in second
    assert (tmp_path / "out" / "review_agent-1.svg").is_file()
    assert "interrupted" in (tmp_path / "out" / "review_agent-1.svg").read_text()
