"""Checking requirements: Python validators, an LLM judge, and common helpers."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, PrivateAttr, ValidationError

from ..engines import InferenceEngine
from ..nodes import CBlock, Component, ModelOutputThunk, ParseError, Requirement, Span


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on one requirement for one output."""

    passed: bool
    reason: str | None = None
    score: float | None = None

    def __bool__(self) -> bool:
        return self.passed


class JudgeQuestion(Component[Literal["yes", "no"]]):
    """Asks an LLM whether an output meets a requirement (constrained to yes/no)."""

    #: Marks judge calls in a sampler's attempts (they are traced as ``judge``).
    sampling_role: ClassVar[str] = "judge"
    template = (
        "Output to check:\n{output}\n\nRequirement: {requirement}\n"
        "Does the output meet the requirement? Answer yes or no.\nAnswer:"
    )
    output: Span
    requirement: str
    #: The attempt being judged (not a field: it changes no prompt and no cache key).
    #: A sampler's engine view links the judge call to it in the run's LogDAG.
    _judged: Any = PrivateAttr(default=None)


async def validate(
    requirement: Requirement,
    output: ModelOutputThunk[Any],
    engine: Any,
    *,
    judge: Any = None,
) -> ValidationResult:
    """Check ``output`` against ``requirement``; never raises for a bad validator.

    A Python validator receives the output text and returns a bool or a
    ``ValidationResult`` (sync or async); if it raises, that is a failed
    validation with the exception as the reason. Without a validator, an LLM
    judge (``judge``, else ``engine``) answers a yes/no question; an answer
    that is neither is a failed validation with the answer recorded.
    """
    check = requirement.validate
    text = output.value
    if check is not None:
        try:
            verdict = check(text)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:
            return ValidationResult(False, f"validator raised {type(exc).__name__}: {exc}")
        if isinstance(verdict, ValidationResult):
            return verdict
        return ValidationResult(bool(verdict), None if verdict else requirement.description)
    asked = engine
    if judge is not None:
        # Through the sampler's engine view where there is one (``judged_by``), so the
        # judge's calls are in the run's LogDAG like the attempts they judge.
        view = getattr(engine, "judged_by", None)
        asked = view(judge) if callable(view) else judge
    question = JudgeQuestion(output=CBlock(text), requirement=requirement.description)
    question._judged = output
    try:
        answer = await asked.generate(question, options={"temperature": 0.0, "max_tokens": 8})
    except ParseError as exc:
        return ValidationResult(False, f"judge answered neither yes nor no: {exc.raw!r}")
    verdict = answer.parsed
    if verdict == "yes":
        return ValidationResult(True, "judge: yes")
    return ValidationResult(False, f"judge: no ({requirement.description})")


# -- helpers ------------------------------------------------------------------------------


def length_between(min_chars: int = 0, max_chars: int | None = None) -> Requirement:
    """The output's length (stripped) is within ``[min_chars, max_chars]``. With
    ``max_chars``, checked while the output is generated too: a ``RejectionSampler``
    stops an attempt as soon as its text so far is too long."""
    if min_chars < 0 or (max_chars is not None and max_chars < min_chars):
        raise ValueError(f"bad length bounds: {min_chars}..{max_chars}")
    bound = f"{min_chars} to {max_chars}" if max_chars is not None else f"at least {min_chars}"

    def wrong(n: int) -> str:
        return f"length {n} is not {bound} characters"

    def check(text: str) -> ValidationResult:
        n = len(text.strip())
        ok = n >= min_chars and (max_chars is None or n <= max_chars)
        return ValidationResult(ok, None if ok else wrong(n))

    def too_long(text: str) -> str | None:
        n = len(text.strip())
        return wrong(n) if max_chars is not None and n > max_chars else None

    return Requirement(
        f"Between {bound} characters long.",
        validate=check,
        check_stream=too_long if max_chars is not None else None,
    )


def matches(pattern: str, *, description: str | None = None) -> Requirement:
    """The output (stripped) matches the regular expression ``pattern`` in full."""
    compiled = re.compile(pattern)

    def check(text: str) -> ValidationResult:
        ok = compiled.fullmatch(text.strip()) is not None
        return ValidationResult(
            ok, None if ok else f"{text.strip()[:80]!r} does not match {pattern}"
        )

    return Requirement(description or f"Matches the pattern {pattern}.", validate=check)


def never_matches(pattern: str, *, description: str | None = None) -> Requirement:
    """The output contains no match of the regular expression ``pattern``. Checked
    while the output is generated too: a ``RejectionSampler`` stops an attempt as soon
    as its text so far contains a match."""
    compiled = re.compile(pattern)

    def found(text: str) -> str | None:
        match = compiled.search(text)
        return None if match is None else f"the output contains {match.group(0)[:80]!r}"

    def check(text: str) -> ValidationResult:
        reason = found(text)
        return ValidationResult(reason is None, reason)

    return Requirement(
        description or f"Contains nothing that matches {pattern}.",
        validate=check,
        check_stream=found,
    )


def parses_as(model: type[BaseModel]) -> Requirement:
    """The output is JSON that validates as the pydantic ``model``."""

    def check(text: str) -> ValidationResult:
        try:
            model.model_validate_json(text.strip())
        except (ValidationError, ValueError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            return ValidationResult(False, f"not a valid {model.__name__}: {first}")
        return ValidationResult(True)

    return Requirement(f"Is JSON for a {model.__name__}.", validate=check)


def one_of(values: Iterable[str], *, normalize: Callable[[str], str] = str.strip) -> Requirement:
    """The output, normalised, is one of ``values``."""
    allowed = [normalize(v) for v in values]
    if not allowed:
        raise ValueError("one_of needs at least one value")

    def check(text: str) -> ValidationResult:
        got = normalize(text)
        ok = got in allowed
        return ValidationResult(ok, None if ok else f"{got!r} is not one of {json.dumps(allowed)}")

    return Requirement(f"Is one of: {', '.join(allowed)}.", validate=check)


async def check_all(
    requirements: Iterable[Requirement],
    output: ModelOutputThunk[Any],
    engine: InferenceEngine | Any,
    *,
    judge: Any = None,
) -> list[tuple[Requirement, ValidationResult]]:
    return [(r, await validate(r, output, engine, judge=judge)) for r in requirements]
