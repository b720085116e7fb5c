"""``default()``: the engine a run uses when none is given."""

from __future__ import annotations

import os
import threading

from ._base import InferenceEngine

_lock = threading.Lock()
_engines: dict[str, InferenceEngine] = {}


def default() -> InferenceEngine:
    """The process's default engine, made on first use.

    ``SPANGRAPH_ENGINE`` chooses it: unset or ``llamacpp`` is the embedded
    ``LlamaCppEngine``; ``openai:<base_url>`` an ``OpenAIEngine`` on that
    server (``OPENAI_API_KEY`` and ``SPANGRAPH_MODEL`` are read if set).
    """
    spec = os.environ.get("SPANGRAPH_ENGINE", "llamacpp").strip() or "llamacpp"
    with _lock:
        engine = _engines.get(spec)
        if engine is None:
            engine = _engines[spec] = _make(spec)
        return engine


def _make(spec: str) -> InferenceEngine:
    kind, _, rest = spec.partition(":")
    if kind == "llamacpp":
        from ._llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    if kind == "openai":
        if not rest:
            raise ValueError(
                "SPANGRAPH_ENGINE=openai:<base_url>, e.g. openai:http://127.0.0.1:8080/v1"
            )
        from ._openai import OpenAIEngine

        return OpenAIEngine(
            base_url=rest,
            api_key=os.environ.get("OPENAI_API_KEY", "none"),
            model=os.environ.get("SPANGRAPH_MODEL", "default"),
        )
    raise ValueError(
        f"SPANGRAPH_ENGINE={spec!r} names no engine; use 'llamacpp' or 'openai:<base_url>'"
    )
