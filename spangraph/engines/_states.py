"""The concrete execution states: ``Identity`` and ``options(...)``.

``ChatHistory`` is a state too; it lives with the components in
``spangraph.nodes``, as do the mechanics every state shares
(``ExecutionState``: callable, context manager, ``|``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..nodes import ExecutionState
from ..nodes._internal import canonical_json
from ._options import check_options


class Identity(ExecutionState):
    """The state that changes nothing; it drops out of compositions."""

    def flatten(self) -> tuple[ExecutionState, ...]:
        return ()

    def fingerprint(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "Identity()"


class Options(ExecutionState):
    """Model options as a state (``options(temperature=0)``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = check_options(values, where="options()")
        self._fingerprint = canonical_json(["options", self._values], what="model options")

    def model_options(self) -> Mapping[str, Any]:
        return self._values

    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"options({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and other._values == self._values

    def __hash__(self) -> int:
        return hash(self._fingerprint)


def options(**values: Any) -> Options:
    """A state that sets model options (canonical names, or ``extra:<name>``).

    Unknown names and out-of-range values are refused here, where they are written.
    """
    return Options(values)


class Cached(ExecutionState):
    """A state that sets the span cache (a store) and/or the ``CachePolicy``."""

    def __init__(self, store: Any = None, policy: Any = None) -> None:
        from ..cache import CachePolicy, Store

        if store is not None and not isinstance(store, Store):
            raise TypeError(f"cached(store=...) needs a memo store, got {type(store).__name__}")
        if policy is not None and not isinstance(policy, CachePolicy):
            raise TypeError(f"cached(policy=...) needs a CachePolicy, got {type(policy).__name__}")
        self.span_cache = store
        self.cache_policy = policy

    def fingerprint(self) -> str:
        return ""  # where results are kept does not change what they are

    def __repr__(self) -> str:
        return f"cached(store={self.span_cache!r}, policy={self.cache_policy!r})"


def cached(store: Any = None, *, policy: Any = None) -> Cached:
    """A state whose generations use ``store`` as their span cache, under ``policy``."""
    return Cached(store, policy)
