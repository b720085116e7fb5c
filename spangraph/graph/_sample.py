"""The engine view a sampler node's attempts go through (``spangraph.sampling.sample``
declares the node; the scheduler runs it with this view)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import events as ev
from ..engines._internal import declare
from ..nodes import ExecutionState, ModelOutputThunk
from ..nodes._internal import span_id
from ..tracing._internal import semconv as sc


@dataclass
class _Shared:
    counter: itertools.count[int] = field(default_factory=itertools.count)
    pending: dict[str, tuple[ModelOutputThunk[Any], float]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    #: Each attempt's node id and label, by the id of its thunk (what a judge call links to).
    attempts: dict[int, tuple[str, str]] = field(default_factory=dict)


class AttemptEngine:
    """The engine a sampler node's attempts (and judge calls) go through.

    It declares each call to the run's event stream as a node of its own,
    under the sampler's node, so every attempt is in the LogDAG; attempts end
    there once the sampler has validated them and chosen one, and their spans
    say so (``spangraph.validation.passed``, ``spangraph.sample.chosen``,
    ``spangraph.sample.score``). A judge call (``JudgeQuestion``) is labelled
    with the attempt it judges, and that attempt is its upstream node.
    """

    def __init__(
        self,
        engine: Any,
        sampler_id: str,
        path: str,
        emit: Callable[[ev.Event], None] | None,
        shared: _Shared | None = None,
    ) -> None:
        self._engine = engine
        self._sampler_id = sampler_id
        self._path = path
        self._emit = emit
        self._shared = shared if shared is not None else _Shared()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def with_state(self, state: ExecutionState) -> AttemptEngine:
        return AttemptEngine(
            self._engine.with_state(state),
            self._sampler_id,
            self._path,
            self._emit,
            self._shared,
        )

    def judged_by(self, judge: Any) -> AttemptEngine:
        """The view for a judge engine of the sampler's own (``judge=``): its calls are
        nodes under the sampler too, linked to the attempts they judge."""
        return AttemptEngine(judge, self._sampler_id, self._path, self._emit, self._shared)

    async def generate(
        self,
        action: Any,
        state: ExecutionState | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        into: ModelOutputThunk[Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        if into is None:
            into = declare(action, state, options)
        producer = into.producer
        attempt_action = getattr(producer, "action", action)
        number = next(self._shared.counter)
        node_id = span_id(into)
        while node_id in self._shared.ids:
            node_id = f"{node_id}+{number}"
        self._shared.ids.add(node_id)
        into._id = node_id
        judge = getattr(attempt_action, "sampling_role", None) == "judge"
        index = getattr(producer, "sample_index", 0)
        judged = None
        if judge:
            judged = self._shared.attempts.get(id(getattr(attempt_action, "_judged", None)))
            label = f"judge of {judged[1]}" if judged is not None else "judge"
        else:
            label = f"attempt {index}"
            self._shared.attempts[id(into)] = (node_id, label)
        emit = self._emit
        if emit is not None:
            emit(
                ev.NodeDeclared(
                    node_id,
                    kind="generation",
                    label=label,
                    path=f"{self._path}.attempts[{number}]",
                    parent=self._sampler_id,
                    upstream=(judged[0],) if judged is not None else (),
                )
            )
            emit(ev.NodeStarted(node_id))
        try:
            await self._engine.generate(None, into=into)
        except Exception as exc:
            if emit is not None:
                emit(ev.NodeFailed(node_id, error=exc))
            raise
        except BaseException:
            if emit is not None and into.facts.stopped_text is not None:
                # Stopped by a requirement's streaming check: the attempt ends, failed
                # validation, with the other attempts (``finish``).
                self._shared.pending[node_id] = (into, time.perf_counter())
            raise
        if emit is not None:
            if judge:
                emit(ev.NodeFinished(node_id, cache_hit=into.cache_hit))
            else:
                self._shared.pending[node_id] = (into, time.perf_counter())
        return into

    def finish(self, chosen: ModelOutputThunk[Any] | None) -> None:
        """End the attempts' spans, now that their validation is known, and which one the
        sampler chose (``None``: it chose none)."""
        if self._emit is None:
            return
        for node_id, (thunk, ended) in self._shared.pending.items():
            facts = thunk.facts
            attributes: dict[str, Any] = {
                sc.SAMPLE_INDEX: facts.sample_index,
                sc.SAMPLE_CHOSEN: thunk is chosen,
            }
            if facts.score is not None:
                attributes[sc.SAMPLE_SCORE] = facts.score
            results = facts.validation
            if results is not None:
                attributes[sc.VALIDATION_PASSED] = all(v.passed for _, v in results)
                # Free text (it may quote the output): the tracer records it, or its
                # length and digest, by the run's capture mode.
                reasons = [v.reason or r.description for r, v in results if not v.passed]
                attributes[sc.VALIDATION_REASON] = "; ".join(reasons)
            self._emit(
                ev.NodeFinished(
                    node_id, cache_hit=thunk.cache_hit, time=ended, attributes=attributes
                )
            )
        self._shared.pending.clear()
