"""``spangraph run FILE[:NAME]``, through the console script: what it runs, what it prints,
its exit statuses (0, 1, 3, 130), and where its spans go."""

from __future__ import annotations

import pathlib
import signal
from typing import Any

import pytest

from spangraph.tracing import LogDAG
from tests.cli_helpers import Collector, spangraph, start, write

ASK = """
from spangraph import CBlock, Component, Span, compile, generate, options, task


class Ask(Component[str]):
    template = "Question: {q}"
    q: Span


with options(temperature=0):  # deterministic: the memo keeps them
    answers = [generate(Ask(q=CBlock(q))) for q in ("one?", "two?")]
"""


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "home"


def test_runs_the_files_graph_and_prints_outputs_and_summary(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(tmp_path / "prog.py", ASK + "\ngraph = compile(*answers)\n")
    trace = tmp_path / "out" / "run.otlp.jsonl"
    result = spangraph(
        "run", program, "--engine", "scripted:yes", "--no-progress", "--trace", trace, home=home
    )
    assert result.code == 0, result
    assert result.out.splitlines() == [
        "graph[0]: yes",
        "graph[1]: yes",
        result.out.splitlines()[-1],
    ]
    assert result.out.splitlines()[-1].startswith("done: 2 nodes run, 2 generations, 0 cache hits")
    assert f"trace written to {trace}" in result.err
    dag = LogDAG.from_otlp_json(trace)
    assert dag.totals().generations == 2 and dag.run is not None
    assert dag.run.name.endswith("prog")  # the run is named after the file
    assert "Traceback" not in result.err


def test_names_a_list_a_function_or_the_only_generation(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(
        tmp_path / "named.py",
        ASK
        + '''
def build():
    """A function of no arguments that returns what to run."""
    return compile(answers[0])
''',
    )
    listed = spangraph("run", f"{program}:answers", "--engine", "scripted", home=home)
    assert listed.code == 0, listed
    assert listed.out.startswith("answers[0]: ok\nanswers[1]: ok\n"), listed
    built = spangraph("run", f"{program}:build", "--engine", "scripted:built", home=home)
    assert built.code == 0 and built.out.startswith("build: built\n"), built
    single = write(tmp_path / "single.py", ASK.replace('("one?", "two?")', '("one?",)')[:-1])
    single.write_text(single.read_text() + "\nanswer = answers[0]\ndel answers\n")
    only = spangraph("run", single, "--engine", "scripted", home=home)
    assert only.code == 0 and only.out.startswith("answer: ok\n"), only
    nothing = write(tmp_path / "nothing.py", "def main():\n    pass\n")
    refused = spangraph("run", nothing, "--engine", "scripted", home=home)
    assert refused.code == 2 and "nothing.py:NAME" in refused.err and "main" in refused.err


def test_cache_serves_the_second_run(tmp_path: pathlib.Path, home: pathlib.Path) -> None:
    program = write(tmp_path / "prog.py", ASK)
    memo = tmp_path / "memo.db"
    args = ("run", f"{program}:answers", "--engine", "scripted", "--cache", memo)
    first = spangraph(*args, "--max-concurrency", "1", home=home)
    assert first.code == 0 and "2 generations, 0 cache hits" in first.out, first
    second = spangraph(*args, home=home)
    assert second.code == 0 and "2 generations, 2 cache hits" in second.out, second
    info = spangraph("cache", "info", "--memo", memo, home=home)
    assert info.code == 0 and "2 rows" in info.out and "2 hits" in info.out, info


def test_a_failed_or_partial_run_exits_1(tmp_path: pathlib.Path, home: pathlib.Path) -> None:
    program = write(
        tmp_path / "failing.py",
        ASK
        + """
@task
def check(text: str) -> str:
    raise RuntimeError("the check always fails")


mixed = [check(answers[0]), answers[1]]
""",
    )
    failed = spangraph("run", f"{program}:mixed", "--engine", "scripted", home=home)
    assert failed.code == 1, failed
    assert "the check always fails" in failed.err and "Traceback" not in failed.err
    assert "failed:" in failed.out.splitlines()[-1]
    partial = spangraph(
        "run", f"{program}:mixed", "--engine", "scripted", "--on-error", "continue", home=home
    )
    assert partial.code == 1, partial
    assert "mixed[1]: ok" in partial.out and "mixed[0]: (failed)" in partial.out
    assert partial.out.splitlines()[-1].startswith("partial: ")
    assert "task(check): RuntimeError: the check always fails" in partial.err


def test_a_run_waiting_for_answers_exits_3_and_resumes_with_answer(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(
        tmp_path / "review.py",
        ASK
        + """
from spangraph import interrupt


@task
def review(text: str) -> str:
    verdict = interrupt("Approve this answer?", bool)
    return "approved" if verdict else "rejected"


reviewed = [review(answers[0]), answers[1]]
""",
    )
    memo = tmp_path / "memo.db"
    args = ("run", f"{program}:reviewed", "--engine", "scripted", "--cache", memo)
    waiting = spangraph(*args, home=home)
    assert waiting.code == 3, waiting
    (line,) = [x for x in waiting.out.splitlines() if x.startswith("waiting: ")]
    interrupt_id = line.split(": ")[1]
    assert "Approve this answer?" in line and '"type":"boolean"' in line
    assert "reviewed[1]: ok" in waiting.out and "reviewed[0]: (pending)" in waiting.out
    wrong = spangraph(*args, "--answer", f'{interrupt_id}="maybe"', home=home)
    assert wrong.code == 1 and "InterruptError" in wrong.err and "Traceback" not in wrong.err
    done = spangraph(*args, "--answer", f"{interrupt_id}=true", home=home)
    assert done.code == 0, done
    assert "reviewed[0]: approved" in done.out and "2 cache hits" in done.out
    bad = spangraph(*args, "--answer", "no-equals-sign", home=home)
    assert bad.code == 2 and "ID=JSON" in bad.err


def test_a_file_that_raises_exits_1_with_its_own_traceback(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(tmp_path / "broken.py", "ratio = 1 / 0\n")
    result = spangraph("run", program, "--engine", "scripted", home=home)
    assert result.code == 1, result
    assert "broken.py raised while it was imported" in result.err
    assert 'broken.py", line 1' in result.err and "ZeroDivisionError" in result.err
    assert "spangraph/cli" not in result.err  # the user's frames only


def test_sigint_interrupts_the_run_with_status_130(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(
        tmp_path / "slow.py",
        """
        import anyio
        from spangraph import task


        @task
        async def slow() -> str:
            print("started", flush=True)
            await anyio.sleep(120)
            return "too late"


        graph = slow()
        """,
    )
    trace = tmp_path / "slow.otlp.jsonl"
    process = start("run", program, "--engine", "scripted", "--trace", trace, home=home)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"  # the run is under way
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    dag = LogDAG.from_otlp_json(trace)  # an interrupted run's spans are written too
    assert [n.status for n in dag] == ["cancelled"]


def test_otlp_endpoint_gets_the_runs_spans(tmp_path: pathlib.Path, home: pathlib.Path) -> None:
    program = write(tmp_path / "prog.py", ASK)
    with Collector() as collector:
        result = spangraph(
            "run",
            f"{program}:answers",
            "--engine",
            "scripted",
            "--otlp-endpoint",
            collector.url,
            home=home,
        )
    assert result.code == 0, result
    assert f"3 spans sent to {collector.url}/v1/traces" in result.err
    spans = [s for r in collector.received for s in r.spans()]
    assert {r.path for r in collector.received} == {"/v1/traces"}
    assert {r.headers["content-type"] for r in collector.received} == {"application/x-protobuf"}
    kinds = sorted(_attribute(s, "spangraph.node.kind") for s in spans)
    assert kinds == ["generation", "generation", "run"]
    run_span = next(s for s in spans if _attribute(s, "spangraph.node.kind") == "run")
    assert all(s.trace_id == run_span.trace_id for s in spans)


def _attribute(span: Any, key: str) -> Any:
    for item in span.attributes:
        if item.key == key:
            return getattr(item.value, item.value.WhichOneof("value"))
    return None


@pytest.mark.real
def test_run_on_the_embedded_engine(tmp_path: pathlib.Path, spangraph_home: pathlib.Path) -> None:
    program = write(
        tmp_path / "capital.py",
        """
        from spangraph import CBlock, generate, options

        with options(temperature=0, max_tokens=6):
            answer = generate(CBlock("The capital of France is"))
        """,
    )
    memo, trace = tmp_path / "memo.db", tmp_path / "capital.otlp.jsonl"
    args = ("run", program, "--engine", "llamacpp", "--cache", memo, "--no-progress")
    first = spangraph(*args, "--trace", trace, home=spangraph_home, timeout=600)
    assert first.code == 0, first
    assert first.out.startswith("answer: ") and "1 generations, 0 cache hits" in first.out
    node = next(iter(LogDAG.from_otlp_json(trace)))
    assert node.model and node.output_tokens > 0
    again = spangraph(*args, home=spangraph_home, timeout=600)
    assert again.code == 0 and "1 generations, 1 cache hits" in again.out, again
    assert again.out.splitlines()[0] == first.out.splitlines()[0]
    models = spangraph("models", home=spangraph_home)
    assert models.code == 0, models
    assert "gemma-3-270m-q4_k_m.gguf" in models.out and "sha256 ok" in models.out


def test_stream_prints_each_generation_under_its_label(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    program = write(tmp_path / "prog.py", ASK)
    result = spangraph(
        "run", f"{program}:answers", "--engine", "scripted:three word reply", "--stream", home=home
    )
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[:4] == [
        "[generate(Ask)]",
        "three word reply",
        "[generate(Ask)]",
        "three word reply",
    ], lines
    assert lines[-1].startswith("done: 2 nodes run, 2 generations")
    assert "Traceback" not in result.err
