"""``default()``: the engine a run uses when none is given."""

from __future__ import annotations

import os
import threading

from ._base import InferenceEngine

#: The environment variable that chooses the default engine.
ENGINE_VARIABLE = "SPANGRAPH_ENGINE"

_lock = threading.Lock()
_engines: dict[str, InferenceEngine] = {}
_chosen: InferenceEngine | None = None


def default() -> InferenceEngine:
    """The process's default engine, made on first use.

    ``set_default(engine)`` chooses it in code; otherwise ``SPANGRAPH_ENGINE``
    does: unset or ``llamacpp`` is the embedded ``LlamaCppEngine``;
    ``openai:<base_url>`` an ``OpenAIEngine`` on that server (``OPENAI_API_KEY``
    and ``SPANGRAPH_MODEL`` are read if set). A run made without ``engine=``
    asks for it before it starts, so a bad setting fails there (a
    ``ValueError`` naming the variable), not in the middle of a run. Making
    the engine loads no model: an engine loads its model on its first call.
    """
    with _lock:
        if _chosen is not None:
            return _chosen
        spec = default_spec()
        engine = _engines.get(spec)
        if engine is None:
            engine = _engines[spec] = _make(spec)
        return engine


def set_default(engine: InferenceEngine | None) -> InferenceEngine | None:
    """Make ``engine`` the default engine of this process (``None``: back to
    ``SPANGRAPH_ENGINE``); returns the one chosen before, if any."""
    global _chosen
    if engine is not None and not isinstance(engine, InferenceEngine):
        raise TypeError(f"set_default() takes an InferenceEngine or None, not {engine!r}")
    with _lock:
        previous, _chosen = _chosen, engine
    return previous


def default_spec() -> str:
    """``SPANGRAPH_ENGINE``, checked: ``llamacpp`` or ``openai:<base_url>``."""
    spec = os.environ.get(ENGINE_VARIABLE, "llamacpp").strip() or "llamacpp"
    kind, _, rest = spec.partition(":")
    if kind == "llamacpp" and not rest:
        return spec
    if kind == "openai":
        if not rest.startswith(("http://", "https://")):
            raise ValueError(
                f"{ENGINE_VARIABLE}={spec!r}: an OpenAI-compatible engine needs its base URL, "
                f"e.g. {ENGINE_VARIABLE}=openai:http://127.0.0.1:8080/v1"
            )
        return spec
    raise ValueError(
        f"{ENGINE_VARIABLE}={spec!r} names no engine; use 'llamacpp' (the embedded default) "
        "or 'openai:<base_url>'"
    )


def _make(spec: str) -> InferenceEngine:
    kind, _, rest = spec.partition(":")
    if kind == "llamacpp":
        from ._llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    from ._openai import OpenAIEngine

    return OpenAIEngine(
        base_url=rest,
        api_key=os.environ.get("OPENAI_API_KEY", "none"),
        model=os.environ.get("SPANGRAPH_MODEL", "default"),
    )
