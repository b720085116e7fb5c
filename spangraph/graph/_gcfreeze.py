"""Opt-in: runs keep the heap out of the garbage collector's way (``gc.freeze``).

Why: a big traced run makes objects that live as long as the run (its
spans, events, results) faster than the collector's young generations let
them go, so it triggers full collections, and each full collection scans the
whole heap: the application's objects and everything the run made so far.
On a traced run of 100k generations one such collection is a third of the
run (``docs/design/tracing.md``); below some tens of thousands of nodes, and
on untraced runs, there is nothing to gain.

Why opt-in: the collector is the process's, not spangraph's. While a run
freezes the heap, no garbage cycle that existed before the run, or (on a
traced run) that was made since, in any thread, is collected until the run
ends; overlapping runs share one freeze, so a server whose runs overlap
without a break would keep such garbage for as long as they do. An
application that knows its runs are big and its process is its own sets
``spangraph.graph.freeze_gc = True``.

How, when it is on: when a run starts, the objects that exist are frozen
(``gc.freeze``: moved to a permanent generation that collections do not
scan); on a traced run, what the run has made joins them every
``HeapKeeper.EVERY`` node starts. Young collections still run in between,
so short-lived garbage cycles are collected as before. When the last run in
progress ends, the heap is unfrozen and the next full collection sees it
all again. An application that uses ``gc.freeze`` itself (before forking,
say) is left alone: a run that starts while the heap is frozen changes
nothing.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager

from .. import events as ev

_lock = threading.Lock()
#: Runs in progress that share the freeze (0: the heap is not frozen by a run).
_runs = 0


def gc_scope(bus: ev.EventBus, *, traced: bool) -> AbstractContextManager[None]:
    """What a run does to the collector while it executes: nothing, unless
    ``spangraph.graph.freeze_gc`` is set (read as the run starts); then it freezes
    the heap, and a traced run has its objects join the frozen heap as it goes
    (a ``HeapKeeper`` on ``bus``)."""
    from . import freeze_gc

    if not freeze_gc:
        return contextlib.nullcontext()
    if traced:
        bus.subscribe(HeapKeeper(), only=(ev.NodeStarted,))
    return frozen_heap()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the heap while the code inside runs, unless it is frozen already by
    someone other than a run (see the module docstring)."""
    global _runs
    with _lock:
        if _runs == 0 and gc.get_freeze_count() == 0:
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
    the process made since the last freeze (mostly the run's spans and events)
    joins the frozen heap, so later collections do not scan it again.

    ``EVERY`` is small enough that what a run keeps is frozen before a
    collection of the middle generation (one per ten young collections, a few
    hundred nodes on the benchmark) scans it a second time; a freeze only
    splices the collector's lists. It counts starts, not finishes: only work
    nodes start (the scheduler reports pure nodes finished too), and the
    tracer is then the only listener to finishes, which the scheduler calls
    without the bus's fan-out."""

    EVERY = 256
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: ev.Event) -> None:
        self.count += 1
        if self.count >= self.EVERY:
            self.count = 0
            with _lock:
                if _runs:  # the freeze is a run's (see frozen_heap)
                    gc.freeze()
