"""Runs and the process's garbage collector: untouched by default, frozen only when
the application sets ``spangraph.graph.freeze_gc``, and always left as found."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

import spangraph.graph
from spangraph import CBlock, Component, Span, generate, run, task
from spangraph.engines import ScriptedEngine
from spangraph.graph import _gcfreeze


class Op(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str


def _probed_graph() -> tuple[list[Any], list[int]]:
    """A task before and after four layers of generations, each noting the freeze count."""
    seen: list[int] = []

    def probe(*_: Any) -> str:
        seen.append(gc.get_freeze_count())
        return "ok"

    layer: list[Any] = [CBlock(f"leaf {i}") for i in range(3)]
    early = task(probe)()
    for _ in range(4):
        layer = [generate(Op(inputs=[layer[i], layer[(i + 1) % 3]], label="n")) for i in range(3)]
    late = task(probe)(*layer)
    return [early, late], seen


@pytest.mark.parametrize("trace", [True, False])
def test_runs_leave_the_gc_alone_by_default(trace: bool) -> None:
    assert spangraph.graph.freeze_gc is False
    roots, seen = _probed_graph()
    result = run(*roots, engine=ScriptedEngine("x"), trace=trace, progress=False)
    assert result.status == "done" and seen == [0, 0]
    assert gc.get_freeze_count() == 0


def test_run_leaves_the_gc_freeze_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spangraph.graph, "freeze_gc", True)
    monkeypatch.setattr(_gcfreeze.HeapKeeper, "EVERY", 3)  # refreeze during this small run
    roots, seen = _probed_graph()
    assert gc.get_freeze_count() == 0
    result = run(*roots, engine=ScriptedEngine("x"), progress=False)
    assert result.status == "done" and len(seen) == 2
    assert 0 < seen[0] < seen[1]  # frozen at the start, and again as nodes started
    assert gc.get_freeze_count() == 0  # unfrozen after the run
    gc.freeze()  # an application's own freeze (before a fork, say) is left alone
    try:
        run(generate(CBlock("again")), engine=ScriptedEngine("x"), progress=False)
        assert gc.get_freeze_count() > 0  # not unfrozen by the run
    finally:
        gc.unfreeze()


def test_overlapping_runs_share_one_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run in another thread that ends first does not unfreeze the heap under a run
    still in progress; the last run to end unfreezes it."""
    monkeypatch.setattr(spangraph.graph, "freeze_gc", True)
    inside, release = threading.Event(), threading.Event()
    counts: list[int] = []

    def hold() -> str:
        inside.set()
        release.wait(10)
        counts.append(gc.get_freeze_count())
        return "held"

    def other() -> None:
        inside.wait(10)
        run(generate(CBlock("other")), engine=ScriptedEngine("x"), progress=False)
        release.set()

    helper = threading.Thread(target=other)
    helper.start()
    result = run(task(hold, thread=True)(), engine=ScriptedEngine("x"), progress=False)
    helper.join(10)
    assert result.status == "done" and counts and counts[0] > 0
    assert gc.get_freeze_count() == 0
