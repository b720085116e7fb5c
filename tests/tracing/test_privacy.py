"""No content on spans unless the user opted in: a canary in every kind of text a run
can carry, and every artifact the run writes grepped for it.

With content capture off, no canary may appear in any span (attributes, events, status,
links) exported to OpenTelemetry or kept in ``Run.log``, in the OTLP/JSON file, in the
LogDAG's drawings (DOT and SVG), or in ``spangraph log``'s output; the error types,
and the lengths and digests of the texts withheld, must. With capture on (the
control) every content canary appears, which proves the grep can see each kind.
"""

from __future__ import annotations

import functools
import html
import json
import pathlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

import spangraph.tracing
from spangraph import (
    CBlock,
    Component,
    Instruction,
    NodeFailedError,
    Requirement,
    RetryPolicy,
    Run,
    Span,
    generate,
    options,
    run,
    sample,
    task,
)
from spangraph.cli import main as cli_main
from spangraph.engines import ScriptedEngine, TransientEngineError
from spangraph.sampling import RejectionSampler, ValidationResult, matches
from spangraph.tracing import _provider as provider_module
from spangraph.tracing import _semconv as sc
from spangraph.tracing import text_digest

#: One canary per kind of text a run can carry.
CANARY = {
    kind: f"canary-{kind}-{index:02d}q7"
    for index, kind in enumerate(
        (
            "cblock",  # CBlock text
            "param",  # a component parameter (renders into the prompt)
            "system",  # the system option
            "stop",  # a stop string
            "extra",  # an extra: option
            "output",  # the model's output (quoted by matches() too)
            "reason",  # a Python requirement's reason
            "requirement",  # a requirement's description (a judge's "no" quotes it)
            "judge",  # a judge's answer that is neither yes nor no
            "parse",  # output that fails to parse (the ParseError quotes it)
            "task",  # a task's own exception message
            "pydantic",  # a pydantic ValidationError quoting a task's input
            "retry",  # a retried attempt's error
            "dynamic",  # a prompt of a node a task added at run time
            "partial",  # bound into a task's function: a partial, a callable object
        )
    )
}
#: Kinds whose text is content: on spans only with capture on.
CONTENT = [kind for kind in CANARY if kind != "partial"]


class Ask(Component[str]):
    template = "{question} about {doc}"
    question: str
    doc: Span


class Person(BaseModel):
    name: str


class Extract(Component[Person]):
    template = "Extract the person from: {text}"
    text: Span


@task
def explode(text: str) -> str:
    raise ValueError(f"cannot use {CANARY['task']}")


@task
def check_person(text: str) -> Person:
    return Person.model_validate({"name": [CANARY["pydantic"], text]})


@task
def after(value: Any) -> str:
    return "unreachable"


@task
def fan(text: str) -> list[Any]:
    return [generate(CBlock(f"{CANARY['dynamic']} {i}")) for i in range(2)]


def shout(prefix: str, text: str) -> str:
    return f"{prefix}: {text}"


class Shouter:
    """A callable object whose repr quotes what it holds."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, text: str) -> str:
        return shout(self.prefix, text)

    def __repr__(self) -> str:
        return f"Shouter({self.prefix!r})"


def quotes_output(text: str) -> ValidationResult:
    return ValidationResult(False, f"{CANARY['reason']}: got {text!r}")


async def _no_sleep(seconds: float) -> None:
    return None


def reply(state: dict[str, int]) -> Any:
    """The engine: model outputs carry the output canary; the judge says "no" to
    the strict requirement and rambles otherwise; one prompt fails once (retried);
    the extraction answers what does not parse."""

    def answer(request: Any) -> str:
        text = request.text
        if "Does the output meet the requirement?" in text:
            return "no" if "strict" in text else f"perhaps {CANARY['judge']}"
        if text.startswith("Extract the person"):
            return f"not json {CANARY['parse']}"
        if "flaky" in text and state["flaky"]:
            state["flaky"] -= 1
            raise TransientEngineError(f"overloaded by {CANARY['retry']}")
        return f"{CANARY['output']} 42x"

    return answer


def program() -> list[Any]:
    """Every kind of text, with a failure (and what it skips) of every sort."""
    doc = CBlock(f"Document {CANARY['cblock']}", cache=True)
    extra = {"extra:note": CANARY["extra"]}
    with options(system=CANARY["system"], stop=[CANARY["stop"]], temperature=0, **extra):
        answer = generate(Ask(question=CANARY["param"], doc=doc))
        flaky = generate(Ask(question="flaky", doc=doc))
    sampler = RejectionSampler(
        [
            Requirement("Quotes the output.", validate=quotes_output),
            matches(r"\d+"),
            Requirement(f"strict {CANARY['requirement']}"),
            Requirement("Is polite."),
        ],
        loop_budget=2,
        repair="template",
    )
    sampled = sample(Instruction(description=CBlock("Give a number."), grounding=[answer]), sampler)
    parsed = generate(Extract(text=answer))
    skipped_by_parse = generate(Ask(question="next", doc=parsed))
    skipped_by_task = after(explode(answer))
    skipped_by_pydantic = after(check_person(answer))
    partial = task(functools.partial(shout, CANARY["partial"]))(answer)
    shouted = task(Shouter(CANARY["partial"]))(answer)
    return [
        sampled,
        skipped_by_parse,
        skipped_by_task,
        skipped_by_pydantic,
        partial,
        shouted,
        flaky,
        fan(answer),
    ]


def run_program(**policy: Any) -> Run:
    return run(
        *program(),
        engine=ScriptedEngine(reply({"flaky": 1})),
        progress=False,
        retry=RetryPolicy(sleep=_no_sleep, jitter=0),
        **policy,
    )


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An application's SDK provider with an in-memory exporter; capture mode unset."""
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    monkeypatch.setattr(spangraph.tracing, "capture_content", None)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    yield memory
    provider.shutdown()


def strings(value: Any) -> Iterator[str]:
    """Every string in ``value`` (keys too), unescaped: a string holding JSON (the
    GenAI messages, the options) is walked as well, so escaping hides nothing."""
    if isinstance(value, str):
        yield value
        if value[:1] in ("[", "{"):
            try:
                inner = json.loads(value)
            except ValueError:
                return
            yield from strings(inner)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)
    elif value is not None:
        yield str(value)


def span_text(span: ReadableSpan) -> str:
    """Everything a span says, as text: name, attributes, events, status, links."""
    said = [
        span.name,
        dict(span.attributes or {}),
        [(e.name, dict(e.attributes or {})) for e in span.events],
        span.status.description,
        [dict(link.attributes or {}) for link in span.links],
        dict(span.resource.attributes),
    ]
    return "\n".join(strings(said))


@dataclass
class Artifacts:
    """Every artifact of one run, as text, by name."""

    texts: dict[str, str]
    spans: list[ReadableSpan]

    def holding(self, canary: str) -> list[str]:
        return [name for name, text in self.texts.items() if canary in text]


def artifacts(
    result: Run,
    memory: InMemorySpanExporter,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> Artifacts:
    assert result.log is not None
    spans = list(memory.get_finished_spans())
    texts = {f"exported span {s.name!r} #{i}": span_text(s) for i, s in enumerate(spans)}
    for i, record in enumerate(result.log.records):
        said = [record.name, dict(record.attributes), record.status_message, record.links]
        texts[f"Run.log record {record.name!r} #{i}"] = "\n".join(strings(said))
    otlp = result.log.write_otlp_json(tmp_path / "trace.otlp.jsonl")
    lines = otlp.read_text().splitlines()
    texts["OTLP/JSON file"] = "\n".join(s for line in lines for s in strings(json.loads(line)))
    texts["DOT source"] = result.log.to_graphviz().source
    texts["the compiled graph's DOT source"] = result.graph.to_graphviz().source
    drawn = result.log.render(tmp_path / "trace.svg")
    # SVG escapes characters (a "-" is "&#45;"): grep what it shows.
    texts[f"drawing ({drawn.suffix})"] = html.unescape(drawn.read_text())
    capsys.readouterr()
    assert cli_main(["log", str(otlp), "--render", str(tmp_path / "cli.svg")]) == 0
    texts["spangraph log output"] = capsys.readouterr().out
    cli_drawing = next(tmp_path.glob("cli.*"))
    texts[f"spangraph log drawing ({cli_drawing.suffix})"] = html.unescape(cli_drawing.read_text())
    return Artifacts(texts, spans)


def test_capture_off_no_canary_in_any_artifact(
    exporter: InMemorySpanExporter, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_program(on_error="continue")
    found = artifacts(result, exporter, tmp_path, capsys)
    if shutil.which("dot"):
        assert "drawing (.svg)" in found.texts
    leaks = {kind: found.holding(canary) for kind, canary in CANARY.items()}
    assert {kind: where for kind, where in leaks.items() if where} == {}

    # What stands in: error types, lengths and digests, structural skip reasons.
    attributes = [dict(s.attributes or {}) for s in found.spans]
    content = {
        sc.GEN_AI_INPUT_MESSAGES,
        sc.GEN_AI_OUTPUT_MESSAGES,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES,
        sc.INPUT_VALUE,
        sc.INPUT_MIME_TYPE,
        sc.OUTPUT_VALUE,
        sc.OUTPUT_MIME_TYPE,
    }
    assert [sorted(a.keys() & content) for a in attributes if a.keys() & content] == []
    labels = {a.get(sc.NODE_LABEL) for a in attributes}
    assert {"task(partial(shout))", "task(Shouter)"} <= labels
    types = {a.get(sc.ERROR_TYPE) for a in attributes}
    assert {"ParseError", "ValueError", "ValidationError", "TransientEngineError"} <= types
    for a in attributes:
        if sc.ERROR_TYPE in a and a[sc.ERROR_TYPE] != "cancelled":
            assert sc.ERROR_MESSAGE not in a
            assert a[sc.ERROR_MESSAGE_LENGTH] > 0 and len(a[sc.ERROR_MESSAGE_DIGEST]) == 16
    task_error = next(o.error for o in result.failed if isinstance(o.error, ValueError))
    assert text_digest(str(task_error)) in {a.get(sc.ERROR_MESSAGE_DIGEST) for a in attributes}
    statuses = {s.status.description for s in found.spans if s.status.description}
    assert statuses <= types  # a failed span's status names the error type only
    reasons = {a[sc.SKIP_REASON] for a in attributes if sc.SKIP_REASON in a}
    assert any(r.startswith("input ") and r.endswith("failed: ParseError") for r in reasons)
    assert any(r.endswith("failed: ValueError") for r in reasons)
    validated = [a for a in attributes if sc.VALIDATION_PASSED in a]
    assert len(validated) == 2  # two attempts, both failing validation
    for a in validated:
        assert a[sc.VALIDATION_PASSED] is False and sc.VALIDATION_REASON not in a
        assert a[sc.VALIDATION_REASON_LENGTH] > 0 and len(a[sc.VALIDATION_REASON_DIGEST]) == 16
    options = [json.loads(a[sc.OPTIONS]) for a in attributes if sc.OPTIONS in a]
    withheld = next(o for o in options if "stop" in o)
    assert withheld["stop"] == [
        {"length": len(CANARY["stop"]), "digest": text_digest(CANARY["stop"])}
    ]
    assert withheld["extra:note"]["digest"] == text_digest(CANARY["extra"])
    assert withheld["temperature"] == 0.0

    # What the caller gets keeps the text: it is theirs.
    assert any(CANARY["task"] in o.reason for o in result.failed)
    assert any(CANARY["task"] in o.reason for o in result.skipped)
    assert any(CANARY["parse"] in o.reason for o in result.failed)
    sampled = result.outputs[0]
    reasons_kept = [v.reason or "" for a in sampled.attempts for _, v in a.facts.validation or ()]
    assert any(CANARY["reason"] in r for r in reasons_kept)
    assert any(CANARY["judge"] in r for r in reasons_kept)


def test_capture_on_every_content_canary_is_seen(
    exporter: InMemorySpanExporter,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the same run and grep with capture on find each kind of content."""
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    result = run_program(on_error="continue")
    found = artifacts(result, exporter, tmp_path, capsys)
    unseen = [kind for kind in CONTENT if not found.holding(CANARY[kind])]
    assert unseen == []
    # Labels and span paths are structural in either mode: they name code, not data.
    # The text bound into a partial reaches the task's result, and so its span's (and
    # the run's) output value, and nothing else.
    partial = CANARY["partial"]
    spans_held = ("exported span", "Run.log record", "OTLP/JSON file")
    assert [n for n in found.holding(partial) if not n.startswith(spans_held)] == []
    for span in found.spans:
        said = dict(span.attributes or {})
        output = str(said.pop(sc.OUTPUT_VALUE, ""))
        assert partial not in "\n".join(strings([span.name, said]))
        if partial in output:
            assert said[sc.NODE_KIND] in ("task", "run")
    attributes = [dict(s.attributes or {}) for s in found.spans]
    inputs = " ".join(str(a.get(sc.GEN_AI_INPUT_MESSAGES, "")) for a in attributes)
    outputs = " ".join(str(a.get(sc.GEN_AI_OUTPUT_MESSAGES, "")) for a in attributes)
    assert CANARY["cblock"] in inputs and CANARY["system"] in inputs
    assert CANARY["output"] in outputs
    messages = " ".join(str(a.get(sc.ERROR_MESSAGE, "")) for a in attributes)
    for kind in ("task", "parse", "pydantic", "retry", "judge"):
        assert CANARY[kind] in messages, kind
    # OpenInference's input (and output) values on generation, task and run spans.
    with_input = {a[sc.NODE_KIND] for a in attributes if sc.INPUT_VALUE in a}
    assert with_input == {"generation", "task", "run"}
    task_inputs = " ".join(a[sc.INPUT_VALUE] for a in attributes if a[sc.NODE_KIND] == "task")
    assert CANARY["output"] in task_inputs  # the tasks' argument: a model output
    stops = [a.get(sc.GEN_AI_REQUEST_STOP_SEQUENCES) for a in attributes if sc.OPTIONS in a]
    assert (CANARY["stop"],) in stops


def test_capture_off_an_error_raised_to_the_caller_keeps_its_text(
    exporter: InMemorySpanExporter, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NodeFailedError) as raised:
        run_program(on_error="raise")
    chained = raised.value.__cause__
    assert chained is not None and any(c in str(chained) for c in CANARY.values())
    spans = exporter.get_finished_spans()
    (run_span,) = [s for s in spans if (s.attributes or {}).get(sc.NODE_KIND) == "run"]
    assert run_span.attributes[sc.ERROR_TYPE] == type(chained).__name__
    assert run_span.status.description == type(chained).__name__
    assert run_span.attributes[sc.ERROR_MESSAGE_DIGEST] == text_digest(str(chained))
    texts = [span_text(s) for s in spans]
    assert [c for c in CANARY.values() if any(c in t for t in texts)] == []


def test_capture_off_an_error_leaving_the_run_is_no_span_event(
    exporter: InMemorySpanExporter,
) -> None:
    """An error that leaves the run from inside it (a listener's, here) reaches the run
    span as its type, length and digest: no exception event (its message and stack
    trace would quote the error)."""

    def listener(event: Any) -> None:
        if type(event).__name__ == "NodeFinished":
            raise RuntimeError(f"listener saw {CANARY['task']}")

    with pytest.raises(RuntimeError) as raised:  # the error itself, not a group of one
        run(generate(CBlock("x")), engine=ScriptedEngine("y"), listeners=[listener], progress=False)
    assert CANARY["task"] in str(raised.value)  # the caller gets the text
    (run_span,) = exporter.get_finished_spans()
    assert run_span.events == ()
    assert run_span.status.description == run_span.attributes[sc.ERROR_TYPE]
    assert CANARY["task"] not in span_text(run_span)


def test_free_text_rule_without_structure() -> None:
    """What no run above makes: a skip event with only a reason, an option holding a
    mapping. With capture off, the text gives way to its length and digest."""
    from spangraph import events as ev
    from spangraph.tracing._text import FreeText

    reason = f"upstream said {CANARY['task']}"
    withheld: dict[str, Any] = {}
    FreeText("NO_CONTENT").skip(withheld, ev.NodeSkipped("n", reason=reason))
    assert withheld == {
        sc.SKIP_REASON + "_length": len(reason),
        sc.SKIP_REASON + "_digest": text_digest(reason),
    }
    shown: dict[str, Any] = {}
    FreeText("SPAN_ONLY").skip(shown, ev.NodeSkipped("n", reason=reason))
    assert shown == {sc.SKIP_REASON: reason}
    grammar = {"rule": CANARY["extra"]}
    options = {"extra:grammar": grammar, "extra:n": 3, "extra:on": True, "stop": ("a", "bc")}
    off = json.loads(FreeText("NO_CONTENT").options(options))
    assert off == {
        "extra:grammar": {
            "length": len(json.dumps(grammar)),
            "digest": text_digest(json.dumps(grammar)),
        },
        "extra:n": 3,
        "extra:on": True,
        "stop": [
            {"length": 1, "digest": text_digest("a")},
            {"length": 2, "digest": text_digest("bc")},
        ],
    }
    on = json.loads(FreeText("SPAN_ONLY").options(options))
    assert on == {"extra:grammar": grammar, "extra:n": 3, "extra:on": True, "stop": ["a", "bc"]}


@pytest.mark.real
def test_capture_off_on_the_real_engine(
    llama: Any,
    exporter: InMemorySpanExporter,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real embedded engine: a prompt, its options, a truncated JSON output (a
    ParseError quoting it), a validation reason quoting a real output, a task's
    error and the skips after them; then the same with capture on."""

    def real_program() -> list[Any]:
        doc = CBlock(f"Document {CANARY['cblock']}")
        with options(system=CANARY["system"], stop=[CANARY["stop"]], max_tokens=6, temperature=0):
            answer = generate(Ask(question=CANARY["param"], doc=doc))
            parsed = generate(Extract(text=answer), options={"max_tokens": 2})  # cut off
        sampled = sample(
            Instruction(description=CBlock("Name a colour.")),
            RejectionSampler([Requirement("Quotes it.", validate=quotes_output)], loop_budget=1),
            state=options(max_tokens=4, temperature=0),
        )
        return [generate(Ask(question="next", doc=parsed)), after(explode(answer)), sampled]

    def real_run() -> tuple[Run, Artifacts]:
        exporter.clear()
        result = run(*real_program(), engine=llama, on_error="continue", progress=False)
        return result, artifacts(result, exporter, tmp_path, capsys)

    result, found = real_run()
    assert {type(o.error).__name__ for o in result.failed} == {"ParseError", "ValueError"}
    kinds = ("cblock", "param", "system", "stop", "reason", "task")
    assert {
        kind: found.holding(CANARY[kind]) for kind in kinds if found.holding(CANARY[kind])
    } == {}
    parse_error = next(o.error for o in result.failed if type(o.error).__name__ == "ParseError")
    assert not found.holding(str(parse_error))
    digests = {dict(s.attributes or {}).get(sc.ERROR_MESSAGE_DIGEST) for s in found.spans}
    assert text_digest(str(parse_error)) in digests

    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    result, found = real_run()
    assert [kind for kind in kinds if not found.holding(CANARY[kind])] == []
    assert found.holding(str(parse_error)[:200])
