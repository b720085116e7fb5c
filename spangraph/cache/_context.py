"""The run's cache setting, visible to the generate protocol of every engine in the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ._policy import CachePolicy
from ._stores import Store

#: What ``run(cache=...)`` takes: a memo store (the run's memo, under each
#: generation's policy), a ``CachePolicy`` (the run's policy, with the stores the
#: states and engines name), both as ``(store, policy)``, or ``None`` (neither).
CacheSetting = Store | CachePolicy | tuple[Store | None, CachePolicy | None] | None

_run_cache: ContextVar[tuple[Store | None, CachePolicy | None]] = ContextVar(
    "spangraph_run_cache", default=(None, None)
)


def split_cache_setting(setting: CacheSetting) -> tuple[Store | None, CachePolicy | None]:
    """``cache=`` as ``(store, policy)``; anything but a ``CacheSetting`` is a ``TypeError``
    (checked here, at run time, too: the annotation is not enforced)."""
    if setting is None:
        return None, None
    if isinstance(setting, CachePolicy):
        return None, setting
    if isinstance(setting, tuple) and len(setting) == 2:
        store, policy = setting
        if (store is None or isinstance(store, Store)) and (
            policy is None or isinstance(policy, CachePolicy)
        ):
            return store, policy
    if isinstance(setting, Store):
        return setting, None
    raise TypeError(
        f"cache= takes a store (MemoryStore, SQLiteStore, LayeredStore), a CachePolicy, or "
        f"(store, policy); got {type(setting).__name__}"
    )


#: The run's ``(store, policy)``: the context variable's own ``get``, with no Python
#: frame of ours around it (the generate protocol reads it once per generation).
run_cache: Callable[[], tuple[Store | None, CachePolicy | None]] = _run_cache.get


@contextmanager
def use_run_cache(store: Store | None, policy: CachePolicy | None) -> Iterator[None]:
    token = _run_cache.set((store, policy))
    try:
        yield
    finally:
        _run_cache.reset(token)
