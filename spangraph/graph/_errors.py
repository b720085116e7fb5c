"""Errors a run raises."""

from __future__ import annotations


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
        super().__init__(f"{path}: {type(error).__name__}: {error}")
