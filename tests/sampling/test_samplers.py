from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from spangraph import (
    CBlock,
    Component,
    Instruction,
    Message,
    Requirement,
    Span,
    arun,
    generate,
    options,
    run,
    sample,
)
from spangraph.cache import CachePolicy, MemoryStore
from spangraph.engines import EngineRequestError, Request, ScriptedEngine
from spangraph.sampling import (
    BestOfN,
    HyperParamSweep,
    MajorityVote,
    RejectionSampler,
    Sampler,
    ValidationResult,
    length_between,
    matches,
    never_matches,
    one_of,
    parses_as,
    validate,
)


class Sequence_(ScriptedEngine):
    """Answers from a list, one per call, and records every prompt."""

    def __init__(self, answers: list[str], **kw: Any) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        super().__init__(self._next, **kw)

    def _next(self, request: Request) -> str:
        self.prompts.append(request.text)
        if not self.answers:
            raise EngineRequestError("out of answers")
        answer = self.answers.pop(0)
        if answer == "!error":
            raise EngineRequestError("engine refused")
        return answer


def is_digit(text: str) -> bool:
    return text.strip().isdigit()


def rs(answers: list[str], **kw: Any) -> tuple[list[Any], Sequence_]:
    engine = Sequence_(answers)
    sampler = RejectionSampler([Requirement("A number.", validate=is_digit)], **kw)
    thunks = anyio.run(sampler, engine, Instruction("Give a number."))
    return thunks, engine


def test_budget_counts_and_stop_at_first_pass() -> None:
    thunks, engine = rs(["no", "nope", "7", "8"], loop_budget=5)
    assert [t.value for t in thunks] == ["no", "nope", "7"]
    assert len(engine.prompts) == 3
    thunks, engine = rs(["a", "b", "c", "d", "e"], loop_budget=3)
    assert len(thunks) == 3 and len(engine.prompts) == 3


def test_no_repair_after_the_final_attempt() -> None:
    _, engine = rs(["a", "b"], loop_budget=2, repair="template")
    assert len(engine.prompts) == 2  # two attempts, and no third prompt built
    assert "did not meet" in engine.prompts[1]


def test_repair_note_lists_only_failing_reasons() -> None:
    engine = Sequence_(["12345", "1"])
    sampler = RejectionSampler(
        [
            Requirement("A number.", validate=is_digit),
            Requirement("Short.", validate=lambda t: ValidationResult(len(t) < 3, "too long")),
            Requirement("Odd.", validate=lambda t: int(t) % 2 == 1),
        ],
        loop_budget=2,
        repair="template",
    )
    thunks = anyio.run(sampler, engine, Instruction("Give a number."))
    note = engine.prompts[1]
    assert "- too long" in note
    assert "A number." not in note.split("did not meet")[1]
    assert "Odd." not in note.split("did not meet")[1]
    assert sampler.select(thunks).value == "1"


@pytest.mark.parametrize(
    ("repair", "expected"),
    [
        ("retry", "first"),
        ("template", "first"),
        ("multi_turn", "last"),
    ],
)
def test_first_or_last_returned_on_failure(repair: str, expected: str) -> None:
    engine = Sequence_(["first", "middle", "last"])
    sampler = RejectionSampler(["A number."], loop_budget=3, repair=repair)  # type: ignore[arg-type]
    sampler.requirements[0] = Requirement("A number.", validate=is_digit)
    thunks = anyio.run(sampler, engine, Instruction("Give a number."))
    chosen = sampler.select(thunks)
    assert chosen.value == expected and chosen.facts.validation_passed is False


def test_multi_turn_continues_the_chat() -> None:
    engine = Sequence_(["x", "5"])
    sampler = RejectionSampler([Requirement("A number.", validate=is_digit)], repair="multi_turn")
    anyio.run(sampler, engine, CBlock("Give a number."))
    second = engine.prompts[1]
    assert second.startswith("user: Give a number.\nassistant: x\nuser: The previous answer")


def test_early_stop_with_concurrency() -> None:
    for concurrency in (2, 3):
        answers = ["a", "b", "c", "4", "e", "f", "g", "h"]
        engine = Sequence_(answers, latency=0.01)
        sampler = RejectionSampler(
            [Requirement("A number.", validate=is_digit)], loop_budget=8, concurrency=concurrency
        )
        thunks = anyio.run(sampler, engine, Instruction("n?"))
        success = next(i for i, t in enumerate(thunks) if t.facts.validation_passed)
        assert success <= len(engine.prompts) - 1 <= success + concurrency


def test_engine_error_re_raised_only_when_nothing_succeeded() -> None:
    thunks, _ = rs(["!error", "3"], loop_budget=3)
    # The failed attempt is kept (the trace shows it too), and the next one chosen.
    assert [t.state.value for t in thunks] == ["failed", "done"] and thunks[1].value == "3"
    assert isinstance(thunks[0].error, EngineRequestError)
    with pytest.raises(EngineRequestError, match="engine refused"):
        rs(["!error", "!error"], loop_budget=2)


def test_validator_that_raises_is_a_failed_validation() -> None:
    def broken(text: str) -> bool:
        raise RuntimeError("validator bug")

    engine = Sequence_(["1", "2"])
    sampler = RejectionSampler([Requirement("x", validate=broken)], loop_budget=2)
    thunks = anyio.run(sampler, engine, Instruction("n?"))
    ((_, verdict),) = thunks[0].facts.validation or ()
    assert not verdict.passed and "RuntimeError: validator bug" in (verdict.reason or "")


def test_llm_judge_yes_no_and_neither() -> None:
    thunk_engine = ScriptedEngine("the output")

    async def judged(answer: str) -> ValidationResult:
        output = await thunk_engine.generate("q")
        return await validate(Requirement("Is polite."), output, ScriptedEngine(answer))

    assert anyio.run(judged, "yes").passed
    no = anyio.run(judged, "no")
    assert not no.passed and "judge: no" in (no.reason or "")
    neither = anyio.run(judged, "perhaps")
    assert not neither.passed and "neither yes nor no" in (neither.reason or "")


def test_helpers() -> None:
    class Pair(BaseModel):
        a: int

    async def check(req: Requirement, text: str) -> ValidationResult:
        thunk = await ScriptedEngine(text).generate("q")
        return await validate(req, thunk, None)

    assert anyio.run(check, length_between(2, 4), "abc").passed
    assert "length 5" in (anyio.run(check, length_between(2, 4), "abcde").reason or "")
    assert anyio.run(check, matches(r"\d{3}"), "123").passed
    assert not anyio.run(check, matches(r"\d{3}"), "12a").passed
    assert anyio.run(check, parses_as(Pair), '{"a": 1}').passed
    assert "not a valid Pair" in (anyio.run(check, parses_as(Pair), '{"a": "x"}').reason or "")
    assert anyio.run(check, one_of(["red", "blue"]), " red ").passed
    assert not anyio.run(check, one_of(["red", "blue"]), "green").passed
    with pytest.raises(ValueError):
        length_between(5, 2)
    with pytest.raises(ValueError):
        one_of([])


def test_majority_and_best_of_n_tie_breaking() -> None:
    votes = MajorityVote(5)
    thunks = anyio.run(votes, Sequence_(["b", " a", "b ", "a", "c"]), CBlock("q"))
    assert votes.select(thunks).value == "b"  # a and b tie at 2: b came first
    best = BestOfN(4, scorer=len)
    thunks = anyio.run(best, Sequence_(["xx", "yyy", "zzz", "w"]), CBlock("q"))
    assert best.select(thunks).value == "yyy"  # tie at 3: the earliest
    assert [t.facts.sample_index for t in thunks] == [0, 1, 2, 3]


def test_sweep_one_thunk_per_grid_point_with_its_options() -> None:
    seen: list[dict[str, Any]] = []
    engine = ScriptedEngine(lambda r: seen.append(dict(r.options)) or "ok")
    sweep = HyperParamSweep({"temperature": [0.0, 0.7], "top_k": [5, 40]})
    thunks = anyio.run(sweep, engine, CBlock("q"))
    points = [t.facts.options or {} for t in thunks]
    labels = sorted((o["temperature"], o["top_k"]) for o in points)
    assert labels == [(0.0, 5), (0.0, 40), (0.7, 5), (0.7, 40)]
    assert sorted((o["temperature"], o["top_k"]) for o in seen) == labels


def test_samples_differ_and_reproduce_with_cache_always() -> None:
    counter = {"n": 0}

    def fresh(request: Request) -> str:
        counter["n"] += 1
        return f"s{counter['n']}"

    store = MemoryStore()
    first = sample(CBlock("q"), MajorityVote(3))
    run(first, engine=ScriptedEngine(fresh), cache=(store, CachePolicy("always")), progress=False)
    values = [t.value for t in first.attempts]
    assert len(set(values)) == 3
    again = sample(CBlock("q"), MajorityVote(3))
    result = run(
        again, engine=ScriptedEngine(fresh), cache=(store, CachePolicy("always")), progress=False
    )
    assert [t.value for t in again.attempts] == values and result.cache_hits == 3


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one requirement"):
        RejectionSampler([])
    with pytest.raises(ValueError, match="loop_budget"):
        RejectionSampler(["x"], loop_budget=0)
    with pytest.raises(ValueError, match="concurrency"):
        RejectionSampler(["x"], concurrency=0)
    with pytest.raises(ValueError, match="repair"):
        RejectionSampler(["x"], repair="pray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one point"):
        HyperParamSweep({})
    with pytest.raises(ValueError, match="at least one point"):
        HyperParamSweep({"temperature": []})
    with pytest.raises(ValueError, match="n must be"):
        MajorityVote(0)
    with pytest.raises(ValueError, match="n must be"):
        BestOfN(0, scorer=len)
    with pytest.raises(TypeError, match="needs a Sampler"):
        sample(CBlock("q"), "majority")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="__call__, which is final"):

        class Bad(Sampler):
            async def _sampler(self, engine: Any, action: Any) -> list[Any]:
                return []

            async def __call__(self, engine: Any, action: Any) -> list[Any]:  # type: ignore[override]
                return []


class Ask(Component[str]):
    template = "Q: {q}\nA:"
    q: Span


def test_sampler_node_in_a_graph_and_its_logdag() -> None:
    engine = Sequence_(["no", "maybe", "42", "yes"])
    chosen = sample(
        Instruction("Give a number."),
        RejectionSampler(
            [Requirement("A number.", validate=is_digit), Requirement("Polite.")], loop_budget=3
        ),
    )
    result = run(chosen, engine=engine, progress=False)
    # attempts: "no" (judge not asked? both requirements run) ...
    assert chosen.value in ("no", "maybe", "42")
    assert chosen.attempts and all(t.facts.validation is not None for t in chosen.attempts)
    dag = result.log
    assert dag is not None
    (sampler_node,) = dag.filter(kind="sampler")
    attempts = [n for n in dag.nodes.values() if n.parent == sampler_node.key]
    sample_edges = [e for e in dag.edges if e.kind == "sample" and e.source == sampler_node.key]
    assert len(sample_edges) == len(attempts) >= 2
    labelled = [n for n in attempts if n.label.startswith("attempt")]
    judges = [n for n in attempts if n.label.startswith("judge of attempt ")]
    assert len(labelled) == len(chosen.attempts) and judges
    assert all("spangraph.validation.passed" in n.attributes for n in labelled)
    assert all(n.kind == "generation" for n in judges)
    # Each judge call is linked to the attempt it judged, and labelled with it.
    by_key = dag.nodes
    judged = {e.target: by_key[e.source] for e in dag.edges if e.kind == "judge"}
    assert set(judged) == {n.key for n in judges}
    for judge in judges:
        assert judge.label == f"judge of {judged[judge.key].label}"


def test_a_judge_engine_of_the_sampler_s_own_is_in_the_logdag() -> None:
    """``judge=`` names another engine: its calls go through the sampler's view too, so
    they are nodes under the sampler, each linked to the attempt it judged."""
    judge = ScriptedEngine("yes")
    chosen = sample(
        Instruction("Give a number."),
        RejectionSampler([Requirement("Polite.")], loop_budget=2, judge=judge),
    )
    dag = run(chosen, engine=ScriptedEngine("42"), progress=False).log
    assert judge.calls == 1
    (sampler_node,) = dag.filter(kind="sampler")
    (judged,) = [n for n in dag.nodes.values() if n.label == "judge of attempt 0"]
    assert judged.parent == sampler_node.key and judged.kind == "generation"
    (edge,) = [e for e in dag.edges if e.kind == "judge"]
    assert edge.target == judged.key and dag.nodes[edge.source].label == "attempt 0"


def test_a_sampler_downstream_of_a_failure_is_reported_skipped() -> None:
    engine = Sequence_(["!error"])
    failing = generate(Instruction("Give a number."))
    chosen = sample(
        Instruction("Check the number.", grounding=[failing]),
        RejectionSampler([Requirement("A number.", validate=is_digit)], loop_budget=2),
    )
    result = run(chosen, engine=engine, on_error="continue", progress=False)
    assert result.status == "partial"
    assert [result.graph[o.node_id].kind for o in result.skipped] == ["sampler"]
    assert "failed: EngineRequestError" in result.skipped[0].reason


def test_multi_turn_renders_each_role_once_after_a_message() -> None:
    engine = Sequence_(["x", "5"])
    sampler = RejectionSampler([Requirement("A number.", validate=is_digit)], repair="multi_turn")
    anyio.run(sampler, engine, Message(role="user", content=CBlock("Give a number.")))
    assert engine.prompts[1] == (
        "user: Give a number.\nassistant: x\nuser: The previous answer did not meet these "
        "requirements:\n- A number.\nassistant:"
    )


def test_a_streaming_check_stops_an_attempt_at_the_first_failure() -> None:
    words = "fine fine BAD " + " ".join(["more"] * 200)
    engine = Sequence_([words, "all fine here"], latency=2.0)  # 2 s per attempt, streamed
    requirement = never_matches(r"BAD")
    chosen = sample(CBlock("Say something."), RejectionSampler([requirement], loop_budget=2))

    async def main() -> None:
        with anyio.fail_after(5):  # the first attempt would take 2 s to the end
            await arun(chosen, engine=engine, progress=False)

    anyio.run(main)
    first, second = chosen.attempts
    assert first.facts.validation_passed is False and first.state.value == "cancelled"
    assert first.facts.stopped_text == "fine fine BAD"  # stopped at the word that failed
    (verdict,) = first.facts.validation
    assert verdict[0] is requirement and verdict[1].reason == "the output contains 'BAD'"
    assert chosen.value == "all fine here" and second.facts.validation_passed is True


def test_a_length_cap_stops_the_generation_and_repair_sees_the_partial_text() -> None:
    engine = Sequence_(["one two three four five six", "short"], latency=0.3)
    sampler = RejectionSampler([length_between(0, 10)], loop_budget=2, repair="multi_turn")
    chosen = sample(CBlock("Be short."), sampler)
    run(chosen, engine=engine, progress=False)
    first = chosen.attempts[0]
    assert first.facts.stopped_text == "one two three"  # 13 characters: over the cap
    assert engine.prompts[1].startswith("user: Be short.\nassistant: one two three\nuser: ")
    assert chosen.value == "short"


def test_when_every_attempt_is_stopped_the_node_fails_saying_so() -> None:
    engine = Sequence_(["BAD one", "BAD two"], latency=0.05)
    chosen = sample(CBlock("q"), RejectionSampler([never_matches("BAD")], loop_budget=2))
    result = run(chosen, engine=engine, on_error="continue", progress=False)
    assert result.status == "partial"
    (failure,) = result.failed
    assert "2 stopped by a requirement's streaming check" in failure.reason
    assert [a.facts.stopped_text for a in chosen.attempts] == ["BAD", "BAD"]  # kept


def test_a_stopped_attempt_s_reason_is_redacted_on_spans_with_capture_off() -> None:
    engine = Sequence_(["SECRET leaked", "ok"], latency=0.05)
    chosen = sample(CBlock("q"), RejectionSampler([never_matches("SECRET")], loop_budget=2))
    result = run(chosen, engine=engine, progress=False)
    attempts = [n for n in result.log if n.label.startswith("attempt")]
    assert len(attempts) == 2
    stopped = attempts[0]
    assert stopped.attributes.get("spangraph.validation.passed") is False
    assert "SECRET" not in repr(stopped.attributes)
    assert stopped.attributes.get("spangraph.validation.reason_length", 0) > 0


def test_an_attempt_that_fails_to_parse_is_kept_and_counted() -> None:
    class Number(Component[int]):
        template = "{q}"
        q: Span

    engine = Sequence_(["not a number", "7"])
    requirement = Requirement("A number.", validate=is_digit)
    chosen = sample(Number(q=CBlock("n?")), RejectionSampler([requirement], loop_budget=2))
    result = run(chosen, engine=engine, progress=False)
    first, second = chosen.attempts
    assert first.state.value == "failed" and type(first.error).__name__ == "ParseError"
    assert chosen.parsed == 7 and chosen.facts.selected is second
    assert result.generations == 2  # as many as the trace shows


def test_a_scripted_engine_counts_the_calls_of_its_views() -> None:
    engine = Sequence_(["x", "y", "4"])
    sampler = RejectionSampler([Requirement("A number.", validate=is_digit)], loop_budget=3)
    with options(temperature=0.5):  # a state: the attempts go through an engine view
        chosen = sample(CBlock("n?"), sampler)
    run(chosen, engine=engine, progress=False)
    assert engine.calls == 3 == len(chosen.attempts) and engine.in_flight == 0
