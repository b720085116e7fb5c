"""Errors a run raises."""

from __future__ import annotations

from ..nodes import SpanError


class NodeFailedError(RuntimeError):
    """A node failed and the run's policy is ``on_error="raise"``.

    ``path`` is the failing node's span path; the original exception is
    chained (``__cause__``) and kept in ``error``. ``run`` is the partial
    ``Run``: every result computed before the failure is still on it.
    """

    def __init__(self, path: str, error: BaseException, run: object = None) -> None:
        self.path = path
        self.error = error
        self.run = run
        super().__init__(f"{path}: {type(error).__name__}: {_unplaced(error, path)}")


def _unplaced(error: BaseException, path: str) -> str:
    """The error's message without the place a ``SpanError`` already names, when that
    is the node's own (so the message names it once)."""
    if isinstance(error, SpanError) and error.path:
        return error.reason if error.path == path else f"at {error.path}: {error.reason}"
    return str(error)
