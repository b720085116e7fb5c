"""A progress bar that listens to the run's events (tqdm).

tqdm rather than rich: it has a notebook widget and a terminal bar, it is a
small pure-Python dependency, and it writes to stderr, leaving the
program's own output alone. In a notebook the widget needs ipywidgets (the
``notebook`` extra); without it, the text bar is used, rather than
``tqdm.auto``'s fallback, which warns "IProgress not found" in every run.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import events as ev
from ..nodes._internal import WORK_KINDS


def wanted(progress: bool | None) -> bool:
    """``progress=None``: on in a terminal or a notebook, off otherwise."""
    if progress is not None:
        return progress
    if _in_notebook():
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _bar_class() -> Any:
    """tqdm's notebook widget in a notebook that has ipywidgets, else its text bar."""
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm as widget

            return widget
    from tqdm.std import tqdm as text

    return text


class ProgressBar:
    """Counts generation and task nodes: done / total, and running generations."""

    def __init__(self, bus: ev.EventBus, *, desc: str = "spangraph") -> None:
        self._bar: Any = _bar_class()(
            total=0, desc=desc, unit="node", leave=True, dynamic_ncols=True
        )
        self._kinds: dict[str, str] = {}
        self._running: set[str] = set()
        self._unsubscribe = bus.subscribe(self._on_event)

    def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.NodeQueued(kind=kind):
                # Queued events arrive for the compiled graph and for every
                # node a task adds at run time, so the total grows with it.
                # No redraw here: a 10k-node graph would redraw 10k times before the
                # first node runs; the next update() shows the new total (tqdm throttles it).
                if kind in WORK_KINDS and event.node_id not in self._kinds:
                    self._bar.total += 1
                self._kinds[event.node_id] = kind
            case ev.NodeStarted():
                if self._kinds.get(event.node_id) == "generation":
                    self._running.add(event.node_id)
                    self._show()
            case (
                ev.NodeFinished()
                | ev.NodeFailed()
                | ev.NodeSkipped()
                | ev.NodeCancelled()
                | ev.NodeInterrupted()
            ):
                self._running.discard(event.node_id)
                if self._kinds.get(event.node_id) in WORK_KINDS:
                    self._bar.update(1)
                    self._show()

    def _show(self) -> None:
        self._bar.set_postfix_str(f"running {len(self._running)}", refresh=False)

    def close(self) -> None:
        self._unsubscribe()
        self._bar.close()
