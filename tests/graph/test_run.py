from __future__ import annotations

import inspect
from typing import Any

import pytest

from spangraph import arun, run
from spangraph.graph import _run


def test_run_agrees_with_arun(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` spells out ``arun``'s keywords again (typed, with defaults, as httpx's
    ``_api.py`` does): the two signatures are equal, and ``run`` hands each keyword
    to ``arun`` under its own name."""
    assert inspect.signature(run).parameters == inspect.signature(arun).parameters

    received: dict[str, Any] = {}

    async def fake_arun(*roots: Any, **keywords: Any) -> str:
        received.update(keywords, roots=roots)
        return "a run"

    monkeypatch.setattr(_run, "arun", fake_arun)
    keywords = [
        name for name, p in inspect.signature(run).parameters.items() if p.kind is p.KEYWORD_ONLY
    ]
    sent = {name: object() for name in keywords}  # a distinct value for each
    assert run("root", **sent) == "a run"
    assert received == {**sent, "roots": ("root",)}
