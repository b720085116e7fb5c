"""Which progress bar a run draws: tqdm's notebook widget only where it can be drawn."""

from __future__ import annotations

import sys
import warnings

import pytest
from tqdm.notebook import tqdm as widget
from tqdm.std import tqdm as text

from spangraph.graph import _progress


def test_a_terminal_gets_the_text_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_progress, "_in_notebook", lambda: False)
    assert _progress._bar_class() is text


def test_a_notebook_without_ipywidgets_gets_the_text_bar_and_no_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tqdm.auto would pick the widget and warn "IProgress not found" on every run."""
    monkeypatch.setattr(_progress, "_in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # (import fails)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _progress._bar_class() is text


def test_a_notebook_with_ipywidgets_gets_the_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets", reason="the notebook extra is not installed")
    monkeypatch.setattr(_progress, "_in_notebook", lambda: True)
    assert _progress._bar_class() is widget
