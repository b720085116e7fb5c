"""Runs keep the heap they started with out of the garbage collector's way.

Why: a big run makes objects that live as long as the run (spans, events,
results) faster than the collector's young generations let them go, so it
triggers full collections, and each full collection scans the whole heap
again: the application's objects and everything the run made so far. On
the traced benchmark that is a sizeable part of the run
(``docs/design/tracing.md``).

How: while a run executes, the objects that existed before it are frozen
(``gc.freeze``: moved to a permanent generation that collections do not
scan); on a traced run, what the run has made so far joins them every
``HeapKeeper.EVERY`` node starts. Young collections still run in between,
so short-lived garbage cycles are collected as before. When the last run
in progress ends, the heap is unfrozen, and frozen garbage cycles are
collected by the next full collection.

What the process sees: the freeze is process-wide. Overlapping runs
(threads, concurrent ``arun``) share one freeze, kept until the last of
them ends; a process whose runs overlap without a break keeps its
garbage cycles (of any thread) until then. An application that uses
``gc.freeze`` itself (before forking, say) is left alone: a run that
starts while the heap is frozen changes nothing. ``freeze_heap = False``
turns it off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from .. import events as ev

#: Whether runs freeze the heap they started with (see the module docstring).
freeze_heap = True

_lock = threading.Lock()
#: Runs in progress that share the freeze (0: the heap is not frozen by a run).
_runs = 0


@contextlib.contextmanager
def young_heap() -> Iterator[None]:
    """Freeze the heap while the code inside runs (see the module docstring)."""
    global _runs
    with _lock:
        if _runs == 0 and freeze_heap and gc.get_freeze_count() == 0:
            gc.freeze()
            _runs = 1
        elif _runs:
            _runs += 1
    try:
        yield
    finally:
        with _lock:
            if _runs:
                _runs -= 1
                if _runs == 0:
                    gc.unfreeze()


class HeapKeeper:
    """Listens to a traced run's ``NodeStarted`` events: every ``EVERY`` of them, what
    the run made so far joins the frozen heap, so later collections do not scan it
    again.

    ``EVERY`` is small enough that what a run keeps is frozen before a
    collection of the middle generation (one per ten young collections, a few
    hundred nodes on the benchmark) scans it a second time; a freeze only
    splices the collector's lists. It counts starts, not finishes: only work
    nodes start (the scheduler reports pure nodes finished too), and the
    tracer is then the only listener to finishes, which the scheduler then
    calls without the bus's fan-out."""

    EVERY = 256
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: ev.Event) -> None:
        self.count += 1
        if self.count >= self.EVERY:
            self.count = 0
            with _lock:
                if _runs:  # the freeze is a run's (see young_heap)
                    gc.freeze()
