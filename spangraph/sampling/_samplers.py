"""Samplers, built on execution states.

A sampler's ``__call__`` is fixed: it asks ``_hyper_param_sampler()`` for
execution states (default ``[Identity()]``), runs ``_sampler`` under each one
concurrently (``state(engine)``), and returns every thunk. Each attempt is a
generation with its own sample index (so ``CachePolicy("always")`` keeps
samples apart and reproduces them on a re-run); ``thunk.facts`` holds its
``sample_index``, its ``validation`` results (and whether they all
``validation_passed``), and per sampler its ``score``, ``votes`` or
``options``.
``select(thunks)`` picks the result.
"""

from __future__ import annotations

import abc
import inspect
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import anyio

from ..engines import Identity, options
from ..nodes import (
    CBlock,
    ChatHistory,
    ExecutionState,
    Instruction,
    Message,
    ModelOutputThunk,
    Requirement,
    ThunkState,
    render_span,
)
from ..nodes._internal import GenerationProducer, as_span
from ._requirements import ValidationResult, validate

Repair = Literal["retry", "template", "multi_turn"]


class Sampler(abc.ABC):
    """Base of samplers. Subclasses implement ``_sampler`` (and may refine
    ``_hyper_param_sampler`` and ``select``); ``__call__`` is final."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} defines __call__, which is final: implement _sampler() "
                "(and _hyper_param_sampler() for several states)"
            )

    def _hyper_param_sampler(self) -> list[ExecutionState]:
        return [Identity()]

    @abc.abstractmethod
    async def _sampler(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        """Generate the attempts for one execution state (``engine`` is already the view)."""

    async def __call__(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        states = self._hyper_param_sampler()
        if not states:
            raise ValueError(f"{type(self).__name__}._hyper_param_sampler() returned no states")
        results: list[list[ModelOutputThunk[Any]]] = [[] for _ in states]

        async def one(index: int, state: ExecutionState) -> None:
            results[index] = await self._sampler(state(engine), action)

        try:
            async with anyio.create_task_group() as tg:
                for index, state in enumerate(states):
                    tg.start_soon(one, index, state)
        except BaseExceptionGroup as group:
            raise _single(group) from None
        return [thunk for group in results for thunk in group]

    def select(self, thunks: Sequence[ModelOutputThunk[Any]]) -> ModelOutputThunk[Any]:
        """The result: the first attempt that passed validation, else the first attempt."""
        done = [t for t in thunks if t.state is ThunkState.DONE]
        for thunk in done:
            if thunk.facts.validation_passed is not False:
                return thunk
        if done:
            return done[0]
        raise RuntimeError(f"{type(self).__name__}: no attempt produced a result")

    @staticmethod
    async def _attempt(
        engine: Any,
        action: Any,
        index: int,
        state: ExecutionState | None = None,
        checks: Sequence[Requirement] = (),
    ) -> ModelOutputThunk[Any]:
        """One attempt, declared and generated (see ``_declare_attempt`` and
        ``_generate_attempt``)."""
        thunk = Sampler._declare_attempt(action, index, state)
        await Sampler._generate_attempt(engine, thunk, checks)
        return thunk

    @staticmethod
    def _declare_attempt(
        action: Any, index: int, state: ExecutionState | None = None
    ) -> ModelOutputThunk[Any]:
        """The thunk of attempt ``index`` (claimed: the sampler generates it)."""
        thunk: ModelOutputThunk[Any] = ModelOutputThunk(
            GenerationProducer(as_span(action), state, {}, index)
        )
        thunk._claimed = True
        thunk.facts.sample_index = index
        return thunk

    @staticmethod
    async def _generate_attempt(
        engine: Any, thunk: ModelOutputThunk[Any], checks: Sequence[Requirement] = ()
    ) -> None:
        """Generate an attempt. With ``checks`` (requirements with a ``check_stream``),
        its text is checked as it is generated, and the generation is stopped at the
        first failure: the attempt is then failed validation, with that reason, and
        ``facts.stopped_text`` holds the text made until then."""
        if not checks:
            await engine.generate(None, into=thunk)
            return
        thunk.facts.stream = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch, thunk, checks, tg.cancel_scope)
            await engine.generate(None, into=thunk)
            tg.cancel_scope.cancel()  # done: the watcher has nothing more to see


async def _watch(
    thunk: ModelOutputThunk[Any], checks: Sequence[Requirement], generation: anyio.CancelScope
) -> None:
    """Check the attempt's text as it grows; at the first failure, record it and stop
    the generation (llama.cpp stops at its next token)."""
    text = ""
    async for delta in thunk._follow():
        text += delta
        for requirement in checks:
            assert requirement.check_stream is not None
            reason = requirement.check_stream(text)
            if reason is not None:
                facts = thunk.facts
                facts.validation = [(requirement, ValidationResult(False, reason))]
                facts.validation_passed = False
                facts.stopped_text = text
                generation.cancel()
                return


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """A task group's one error, unwrapped (concurrency is an implementation detail)."""
    errors = list(group.exceptions)
    while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
        errors = list(errors[0].exceptions)
    return errors[0] if len(errors) == 1 else group


class RejectionSampler(Sampler):
    """Sample until an attempt meets every requirement, repairing between attempts.

    ``loop_budget`` attempts at most; ``repair`` chooses the next attempt:
    ``retry`` asks the same action again, ``template`` asks an ``Instruction``
    with a note listing only the failing requirements' reasons, and
    ``multi_turn`` continues a chat with the failure note as the user's turn.
    There is no repair after the final attempt. With ``concurrency > 1``,
    independent chains run at once and the rest stop at the first success.
    If nothing passes, the first attempt (``retry``, ``template``) or the last
    (``multi_turn``) is returned, marked as failed validation. An engine error
    is re-raised only when no attempt produced a result.
    """

    def __init__(
        self,
        requirements: Iterable[Requirement | str],
        *,
        loop_budget: int = 3,
        repair: Repair = "retry",
        concurrency: int = 1,
        judge: Any = None,
    ) -> None:
        self.requirements = [
            r if isinstance(r, Requirement) else Requirement(r) for r in requirements
        ]
        if not self.requirements:
            raise ValueError("RejectionSampler needs at least one requirement")
        if loop_budget < 1:
            raise ValueError(f"loop_budget must be >= 1, got {loop_budget}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if repair not in ("retry", "template", "multi_turn"):
            raise ValueError(f"repair must be 'retry', 'template' or 'multi_turn', got {repair!r}")
        self.loop_budget = loop_budget
        self.repair = repair
        self.concurrency = concurrency
        self.judge = judge

    async def _sampler(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        attempts: dict[int, ModelOutputThunk[Any]] = {}
        errors: list[BaseException] = []
        counter = itertools.count()
        success: list[int] = []

        checks = [r for r in self.requirements if r.check_stream is not None]

        async def chain(scope: anyio.CancelScope) -> None:
            current_action, state = action, None
            while not success:
                index = next(counter)
                if index >= self.loop_budget:
                    return
                thunk = self._declare_attempt(current_action, index, state)
                attempts[index] = thunk  # kept, even if it fails (the trace shows it too)
                try:
                    await self._generate_attempt(engine, thunk, checks)
                except Exception as exc:
                    errors.append(exc)
                    continue
                facts = thunk.facts
                if facts.stopped_text is not None:  # a streaming check stopped it
                    results = [
                        (r, v) for r, v in facts.validation or () if isinstance(v, ValidationResult)
                    ]
                    passed = False
                else:
                    results = [
                        (r, await validate(r, thunk, engine, judge=self.judge))
                        for r in self.requirements
                    ]
                    passed = all(v.passed for _, v in results)
                    facts.validation, facts.validation_passed = list(results), passed
                if passed:
                    success.append(index)
                    scope.cancel()
                    return
                if index + 1 >= self.loop_budget:
                    return  # no repair after the final attempt
                current_action, state = self._repaired(
                    action, current_action, state, thunk, results
                )

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(self.concurrency):
                    tg.start_soon(chain, scope)
        # What ended: done, failed (an engine or parse error), or stopped by a streaming
        # check; attempts cancelled because another chain succeeded are not results.
        ordered = [
            attempts[i]
            for i in sorted(attempts)
            if attempts[i].state in (ThunkState.DONE, ThunkState.FAILED)
            or attempts[i].facts.stopped_text is not None
        ]
        if errors and not any(t.state is ThunkState.DONE for t in ordered):
            raise errors[0]
        return ordered

    def select(self, thunks: Sequence[ModelOutputThunk[Any]]) -> ModelOutputThunk[Any]:
        for thunk in thunks:
            if thunk.facts.validation_passed:
                return thunk
        # Attempts stopped by a streaming check have no output to fall back on.
        done = [t for t in thunks if t.state is ThunkState.DONE]
        if not done:
            stopped = sum(t.facts.stopped_text is not None for t in thunks)
            raise RuntimeError(
                "RejectionSampler: no attempt produced a result"
                + (f" ({stopped} stopped by a requirement's streaming check)" if stopped else "")
            )
        return done[-1] if self.repair == "multi_turn" else done[0]

    @staticmethod
    def repair_note(results: Sequence[tuple[Requirement, ValidationResult]]) -> str:
        """The failing requirements' reasons (their descriptions when there is no reason)."""
        lines = [f"- {v.reason or r.description}" for r, v in results if not v.passed]
        return "The previous answer did not meet these requirements:\n" + "\n".join(lines)

    def _repaired(
        self,
        original: Any,
        current: Any,
        state: ExecutionState | None,
        thunk: ModelOutputThunk[Any],
        results: Sequence[tuple[Requirement, ValidationResult]],
    ) -> tuple[Any, ExecutionState | None]:
        note = self.repair_note(results)
        if self.repair == "retry":
            return original, None
        if self.repair == "template":
            if isinstance(original, Instruction):
                description = render_span(original.description).text
                return original.model_copy(
                    update={"description": CBlock(f"{description}\n\n{note}")}
                ), None
            return Instruction(description=CBlock(note), grounding=[original]), None
        # The attempt's action is the user's turn (a message already is one), then
        # the attempt's answer, then the note: the chat rendering of any generation.
        turn = current if isinstance(current, Message) else Message(role="user", content=current)
        before = state.messages if isinstance(state, ChatHistory) else []
        answer = thunk.facts.stopped_text if thunk.facts.stopped_text is not None else thunk.value
        history = ChatHistory(messages=[*before, turn]).append("assistant", CBlock(answer))
        return CBlock(note), history


Scorer = Callable[[str], "float | Awaitable[float]"]


class BestOfN(Sampler):
    """``n`` samples; the highest score wins (ties go to the earliest).

    ``scorer`` is a callable of the output text (sync or async) or a
    ``Requirement`` judged by an LLM (yes scores 1, no scores 0).
    """

    def __init__(self, n: int, scorer: Scorer | Requirement, *, judge: Any = None) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.scorer = scorer
        self.judge = judge

    async def _sampler(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        thunks: list[ModelOutputThunk[Any] | None] = [None] * self.n

        async def one(i: int) -> None:
            thunk = await self._attempt(engine, action, i)
            thunk.facts.score = await self._score(thunk, engine)
            thunks[i] = thunk

        async with anyio.create_task_group() as tg:
            for i in range(self.n):
                tg.start_soon(one, i)
        return [t for t in thunks if t is not None]

    async def _score(self, thunk: ModelOutputThunk[Any], engine: Any) -> float:
        """The sample's score; its ``facts.validation`` records how it was scored: the
        judge's verdict on the requirement, or the scorer's score (a sample a
        callable scored passes: BestOfN rejects none, it picks the best)."""
        facts = thunk.facts
        if isinstance(self.scorer, Requirement):
            verdict = await validate(self.scorer, thunk, engine, judge=self.judge)
            facts.validation, facts.validation_passed = [(self.scorer, verdict)], verdict.passed
            return verdict.score if verdict.score is not None else float(verdict.passed)
        value = self.scorer(thunk.value)
        if inspect.isawaitable(value):
            value = await value
        score = float(value)
        scored = Requirement(f"Scored by {_name_of(self.scorer)}.")
        facts.validation = [(scored, ValidationResult(True, None, score))]
        facts.validation_passed = True
        return score

    def select(self, thunks: Sequence[ModelOutputThunk[Any]]) -> ModelOutputThunk[Any]:
        if not thunks:
            raise RuntimeError("BestOfN: no sample produced a result")
        best = thunks[0]
        for thunk in thunks[1:]:
            if _score(thunk) > _score(best):
                best = thunk
        return best


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _score(thunk: ModelOutputThunk[Any]) -> float:
    score = thunk.facts.score
    assert score is not None, "BestOfN scores every sample it keeps"
    return score


class MajorityVote(Sampler):
    """``n`` samples; the most frequent normalised answer wins (ties: the earliest)."""

    def __init__(self, n: int, normalize: Callable[[str], str] = str.strip) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.normalize = normalize

    async def _sampler(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        thunks: list[ModelOutputThunk[Any] | None] = [None] * self.n

        async def one(i: int) -> None:
            thunks[i] = await self._attempt(engine, action, i)

        async with anyio.create_task_group() as tg:
            for i in range(self.n):
                tg.start_soon(one, i)
        return [t for t in thunks if t is not None]

    def select(self, thunks: Sequence[ModelOutputThunk[Any]]) -> ModelOutputThunk[Any]:
        if not thunks:
            raise RuntimeError("MajorityVote: no sample produced a result")
        keys = [self.normalize(t.value) for t in thunks]
        counts = Counter(keys)
        top = max(counts.values())
        winner = next(k for k in keys if counts[k] == top)  # earliest among the tied
        for thunk, key in zip(thunks, keys, strict=True):
            thunk.facts.votes = counts[key]
        return thunks[keys.index(winner)]


class HyperParamSweep(Sampler):
    """One generation per point of an option grid.

    ``grid`` is a mapping from option name to the values to try (their
    product is swept) or a list of option mappings. Every point's generation
    is in the sampler thunk's ``attempts`` (each with its options in
    ``facts.options``); the thunk itself is the first point's, unless
    ``sample(..., select=...)`` chooses another.
    """

    def __init__(self, grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> None:
        if isinstance(grid, Mapping):
            names = list(grid)
            values = [list(grid[n]) for n in names]
            points = (
                [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
                if names
                else []
            )
        else:
            points = [dict(p) for p in grid]
        if not points:
            raise ValueError("HyperParamSweep needs a grid with at least one point")
        self.points = points
        self._states = [options(**p) for p in points]  # checks every option up front

    def _hyper_param_sampler(self) -> list[ExecutionState]:
        return list(self._states)

    async def _sampler(self, engine: Any, action: Any) -> list[ModelOutputThunk[Any]]:
        state = engine._bound_state
        thunk = await self._attempt(engine, action, 0)
        thunk.facts.options = dict(state.model_options())
        return [thunk]
