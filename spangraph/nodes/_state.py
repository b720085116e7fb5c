"""``ExecutionState``: the mechanics every execution state shares.

A state is a value that changes how generations run: as a callable it turns
an engine into a view with the state applied (``options(temperature=0)(engine)``),
and as a context manager it applies to every ``generate()`` declared inside
it. States compose with ``|``; the right-hand state wins where both set
something. The concrete states live in ``spangraph.engines``; the mechanics
live here because ``ChatHistory`` (a component) is a state too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._digest import canonical_json

if TYPE_CHECKING:
    from ._component import Span
    from ._thunk import ModelOutputThunk

_current: ContextVar[ExecutionState | None] = ContextVar("spangraph_state", default=None)
_tokens: ContextVar[tuple[Token[ExecutionState | None], ...]] = ContextVar(
    "spangraph_state_tokens", default=()
)


def current_state() -> ExecutionState | None:
    """The state that ``with`` blocks have applied in this context (``None`` outside any)."""
    return _current.get()


class ExecutionState:
    """Base of execution states. Subclasses refine the hooks below."""

    #: The span cache this state's generations use (``None``: the run's or engine's).
    span_cache: Any = None
    #: The ``CachePolicy`` for generations under this state (``None``: the run's).
    cache_policy: Any = None

    # -- hooks ---------------------------------------------------------------------

    def model_options(self) -> Mapping[str, Any]:
        """Model options this state sets (canonical names)."""
        return {}

    def prefix_spans(self) -> Sequence[Span]:
        """Spans that come before the action in the prompt (a chat history)."""
        return ()

    def fingerprint(self) -> str:
        """Everything about this state that changes a generation's result, as a string."""
        return canonical_json([type(self).__name__, dict(self.model_options())])

    def flatten(self) -> tuple[ExecutionState, ...]:
        """The primitive states this one is made of, in order."""
        return (self,)

    # -- composition -----------------------------------------------------------------

    def __or__(self, other: ExecutionState) -> ExecutionState:
        if not isinstance(other, ExecutionState):
            return NotImplemented
        return compose(*self.flatten(), *other.flatten())

    def __call__(self, engine: Any) -> Any:
        """An engine view that generates under this state."""
        return engine.with_state(self)

    def __enter__(self) -> ExecutionState:
        outer = _current.get()
        token = _current.set(self if outer is None else outer | self)
        _tokens.set((*_tokens.get(), token))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tokens = _tokens.get()
        if not tokens:
            raise RuntimeError(f"{self!r} exited more often than it was entered")
        _current.reset(tokens[-1])
        _tokens.set(tokens[:-1])

    async def __aenter__(self) -> ExecutionState:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- logs ----------------------------------------------------------------------

    def logs(self) -> dict[ModelOutputThunk[Any], Any]:
        """An ordered map from each span generated under this state to its log: its
        part of the run's LogDAG (or its generation record, when run untraced)."""
        return {
            thunk: log.resolve() if hasattr(log, "resolve") else log
            for thunk, log in self._log_store().items()
        }

    def _record(self, thunk: ModelOutputThunk[Any], log: Any) -> None:
        self._log_store()[thunk] = log

    def _logged_states(self) -> tuple[ExecutionState, ...]:
        """Every state whose logs() shows generations recorded on this one."""
        return (self,)

    def _log_store(self) -> dict[ModelOutputThunk[Any], Any]:
        store: dict[ModelOutputThunk[Any], Any] | None = getattr(self, "_sg_logs", None)
        if store is None:
            store = {}
            self._sg_logs = store
        return store


class ComposedState(ExecutionState):
    """States applied left to right."""

    def __init__(self, states: Sequence[ExecutionState]) -> None:
        self.states = tuple(states)

    def flatten(self) -> tuple[ExecutionState, ...]:
        return self.states

    def model_options(self) -> Mapping[str, Any]:
        merged: dict[str, Any] = {}
        for state in self.states:
            merged.update(state.model_options())
        return merged

    def prefix_spans(self) -> Sequence[Span]:
        return tuple(span for state in self.states for span in state.prefix_spans())

    def fingerprint(self) -> str:
        parts = [p for p in (s.fingerprint() for s in self.states) if p]
        if len(parts) == 1:
            return parts[0]
        return canonical_json(parts) if parts else ""

    @property
    def span_cache(self) -> Any:
        for state in reversed(self.states):
            if state.span_cache is not None:
                return state.span_cache
        return None  # (an empty store is falsy: test against None, never truthiness)

    @property
    def cache_policy(self) -> Any:
        for state in reversed(self.states):
            if state.cache_policy is not None:
                return state.cache_policy
        return None

    def _record(self, thunk: ModelOutputThunk[Any], log: Any) -> None:
        super()._record(thunk, log)
        for state in self.states:
            state._record(thunk, log)

    def _logged_states(self) -> tuple[ExecutionState, ...]:
        return (self, *(s for state in self.states for s in state._logged_states()))

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.states)


def compose(*states: ExecutionState) -> ExecutionState:
    """Compose states left to right; identities drop out."""
    kept = [s for s in states if s.flatten()]
    if len(kept) == 1:
        return kept[0]
    return ComposedState(kept)
