"""The output memo's side of the generate protocol: steps 3 and 7, and their rule.

**The rule: the memo never fails or loses a generation.** A store is an
accelerator. Whatever it raises (a full or read-only disk, a closed
file, a bug in a custom store), the generation goes on as if it had
missed, keeps its output, and the failure is reported as a
``CacheFailed`` event: a run warns at its first one and counts them
(``Run.cache_write_errors``, ``Run.cache_read_errors``). Outside a run
the failure is a ``RuntimeWarning``. An entry that cannot be used (the
store found the row corrupt, or ``MemoEntry.from_json`` refuses its
shape) is a bad entry: skipped, dropped from the store (``reject``),
reported as ``CacheBadEntry`` (``Run.cache_bad_entries``), and the
generation recomputes it.

**Step 3** (``look_up``): the key's entry is read and checked; a hit
finishes the generation. On a miss, a store that offers in-flight leases
(``claim``: ``SQLiteStore``) is asked for the key: either this generation
now holds the key (it computes it; step 7's ``put`` gives the lease back,
and ``release`` does when the generation fails or is cancelled), or the
entry appeared meanwhile (a hit), or another generation holds a live
lease: then ``look_up`` returns ``AWAIT_ENTRY``, and the protocol hands
the generation off like any generation that waits, to ``await_entry``,
which polls the store (``anyio.sleep`` between polls: the event loop runs
on) until the entry is there (a hit) or the lease is free (the owner
failed, died or let it expire: this generation then takes it and
computes).

**Step 7** (``write``, ``evict``): the entry is ``MemoEntry.to_json()``.

Which memo a generation is kept in (store, policy, key) is decided before
step 3 (``memo_for``): it is the ``MemoRoute`` in ``request.memo``, which
step 3 reads, step 7 writes, and a failure releases. What the memo
answered is on the thunk: ``thunk.facts.memo`` (``"hit"`` or ``"miss"``)
and, on a hit, ``thunk.facts.memo_usage``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

import anyio

from .. import events
from ..cache import AUTO, CachePolicy, MemoEntry, Store
from ..cache._internal import describe_bad_entries, describe_failure, memo_key, run_cache
from ..nodes import Timings, Usage
from ._types import Completion, Request

if TYPE_CHECKING:
    from ._base import InferenceEngine

#: What step 3 returns when another generation holds the key's lease: the
#: protocol then awaits ``await_entry`` (compared by identity; never a result).
AWAIT_ENTRY = Completion("", "spangraph: awaiting another generation's entry")

#: Seconds between polls of a lease's key: the first, and at most (it grows by half).
FIRST_POLL, LAST_POLL = 0.01, 0.25

_NO_USAGE = Usage()
_NO_TIMINGS = Timings()


class MemoRoute:
    """The memo a request was looked up in: store, policy, key, and whether step 3
    took the key's lease (so a failure must give it back)."""

    __slots__ = ("bad", "claimed", "key", "policy", "store")

    def __init__(self, store: Store, policy: CachePolicy, key: str) -> None:
        self.store = store
        self.policy = policy
        self.key = key
        self.claimed = False
        #: Whether a value under the key was refused already (a store that cannot
        #: drop it returns it again: it is reported once).
        self.bad = False


def memo_for(request: Request, engine: InferenceEngine) -> MemoRoute | None:
    """The memo ``request``'s generation is kept in, or ``None`` (no memo applies).

    The store is the state's span cache, else the run's, else the engine's
    (``engine.span_cache``); the policy is the generation's, else the state's,
    else the run's, else ``CachePolicy("auto")`` (deterministic generations
    only). The key is ``spangraph.cache.memo_key`` of the engine's
    engine's fingerprint (with its mode), the prompt, schema, options and sample index.
    """
    run_store, run_policy = run_cache()
    state = request.state
    # Explicit None checks throughout: an empty store is falsy (it has a length).
    store = state.span_cache if state is not None else None
    if store is None:
        store = run_store if run_store is not None else engine.span_cache
        if store is None:
            return None  # no store anywhere: the policy does not matter
    thunk = request.thunk
    policy = getattr(thunk.producer, "cache", None) if thunk is not None else None
    if policy is None and state is not None:
        policy = state.cache_policy
    if policy is None:
        policy = run_policy if run_policy is not None else AUTO
    if not policy.applies(request.options):
        return None
    key = memo_key(
        {**engine.fingerprint(), "mode": engine.capabilities.mode},
        request.prompt,
        request.schema,
        request.options,
        request.sample_index,
    )
    request.key = key
    return MemoRoute(store, policy, key)


def look_up(request: Request, route: MemoRoute) -> Completion | None:
    """Step 3 in ``route``'s store: the hit's completion, ``None`` (compute it), or
    ``AWAIT_ENTRY`` (another generation is computing it)."""
    completion = _read(request, route)
    if completion is not None:
        return completion
    thunk = request.thunk
    if thunk is not None:
        thunk.facts.memo = "miss"
    claim = getattr(route.store, "claim", None)
    if claim is None:
        return None
    try:
        found = claim(route.key)
    except Exception:
        return None  # no lease: compute (a duplicate at worst), and put reports a broken store
    route.claimed = found.leased
    if found.value is not None:
        return _serve(request, route, found.value)
    return AWAIT_ENTRY if found.wait else None


async def await_entry(request: Request, route: MemoRoute) -> Completion | None:
    """Step 3 for a key another generation holds: poll until its entry is there
    (the hit's completion) or its lease is free (``None``: compute it)."""
    claim = getattr(route.store, "claim", None)
    if claim is None:
        return None  # (only a store that offers leases has another generation to wait for)
    delay = FIRST_POLL
    while True:
        await anyio.sleep(delay)
        delay = min(delay * 1.5, LAST_POLL)
        try:
            found = claim(route.key)
        except Exception:
            return None
        if found.value is not None:
            return _serve(request, route, found.value)
        if not found.wait:
            route.claimed = found.leased
            return None


def _read(request: Request, route: MemoRoute) -> Completion | None:
    store = route.store
    stats = store.stats
    bad = stats.bad_rows
    try:
        value = store.get(route.key)
    except Exception as exc:
        report(request, route, "get", exc)
        return None
    if stats.bad_rows != bad:  # the store skipped rows it could not read
        _report_bad(request, route, stats.bad_rows - bad)
    if value is None:
        return None
    return _serve(request, route, value)


def _serve(request: Request, route: MemoRoute, value: Any) -> Completion | None:
    """The hit's completion, or ``None`` for a value that is not a memo entry."""
    try:
        entry = MemoEntry.from_json(value)
    except ValueError:
        if not route.bad:
            route.bad = True
            with contextlib.suppress(Exception):
                reject = getattr(route.store, "reject", None)
                if reject is not None:
                    reject(route.key)
            _report_bad(request, route, 1)
        return None
    thunk = request.thunk
    if thunk is not None:
        facts = thunk.facts
        facts.memo = "hit"
        facts.memo_usage = entry.usage
        events.emit(events.CacheHit(thunk._id or "", key=route.key, store=route.store.name))
    # A hit spends no tokens; the original usage is in thunk.facts.memo_usage.
    return Completion(entry.text, entry.finish_reason, _NO_USAGE, _NO_TIMINGS, None)


def write(request: Request, completion: Completion) -> None:
    """Step 7: store the completion's entry (which gives back the key's lease)."""
    route = request.memo
    if route is None:
        return
    text, finish_reason, usage, timings, _ = completion
    entry = MemoEntry(text, finish_reason, usage, timings)
    try:
        route.store.put(route.key, entry.to_json(), route.policy.ttl)
    except Exception as exc:
        report(request, route, "put", exc)
        if route.claimed:  # the failed put is what is reported; the lease goes back anyway
            with contextlib.suppress(Exception):
                _give_back(route)


def evict(request: Request) -> None:
    """Step 7: keep the store within its budgets."""
    route = request.memo
    if route is None:
        return
    try:
        route.store.evict()
    except Exception as exc:
        report(request, route, "evict", exc)


def release(request: Request) -> None:
    """Give back the key's lease, if step 3 took one (the generation failed or was
    cancelled); a no-op for a request that no memo looked up."""
    route = request.memo
    if route is None or not route.claimed:
        return
    try:
        _give_back(route)
    except Exception as exc:
        report(request, route, "release", exc)


def _give_back(route: MemoRoute) -> None:
    route.claimed = False
    give_back = getattr(route.store, "release", None)
    if give_back is not None:
        give_back(route.key)


def report(request: Request, route: MemoRoute, operation: str, error: Exception) -> None:
    """A failed memo operation: to the run (``CacheFailed``), else a warning."""
    store = route.store
    bus = events.current_bus()
    emit = bus.emitter(events.CacheFailed) if bus is not None else None
    if emit is None:
        warnings.warn(describe_failure(repr(store), operation, error), RuntimeWarning, stacklevel=2)
        return
    thunk = request.thunk
    emit(
        events.CacheFailed(
            (thunk._id or "") if thunk is not None else "",
            store=store.name,
            where=repr(store),
            operation=operation,
            error=error,
        )
    )


def _report_bad(request: Request, route: MemoRoute, count: int) -> None:
    store = route.store
    bus = events.current_bus()
    emit = bus.emitter(events.CacheBadEntry) if bus is not None else None
    if emit is None:
        warnings.warn(describe_bad_entries(repr(store)), RuntimeWarning, stacklevel=2)
        return
    thunk = request.thunk
    emit(
        events.CacheBadEntry(
            (thunk._id or "") if thunk is not None else "",
            store=store.name,
            where=repr(store),
            key=route.key,
            count=count,
        )
    )
