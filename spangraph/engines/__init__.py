"""Engines: the fixed generate protocol and the engines that implement its primitive.

``LlamaCppEngine`` and ``OpenAIEngine`` are imported on first use, so that
``import spangraph`` loads neither llama.cpp nor the openai client.
"""

from typing import TYPE_CHECKING, Any

from ._base import InferenceEngine
from ._default import ENGINE_VARIABLE, default, default_spec, set_default
from ._errors import (
    ContextLengthError,
    EngineError,
    EngineRequestError,
    EngineResponseError,
    EngineUnavailable,
    InvalidOptionError,
    ModelFileError,
    ParseError,
    SpangraphHomeError,
    TransientEngineError,
)
from ._options import CANONICAL as CANONICAL_OPTIONS
from ._options import check_options
from ._scripted import ScriptedEngine
from ._states import Cached, Identity, Options, cached, options
from ._types import Capabilities, Completion, Request

if TYPE_CHECKING:
    from ._llamacpp import LlamaCppEngine
    from ._openai import OpenAIEngine


def __getattr__(name: str) -> Any:
    if name == "LlamaCppEngine":
        from ._llamacpp import LlamaCppEngine

        return LlamaCppEngine
    if name == "OpenAIEngine":
        from ._openai import OpenAIEngine

        return OpenAIEngine
    raise AttributeError(f"module 'spangraph.engines' has no attribute {name!r}")


__all__ = [
    "CANONICAL_OPTIONS",
    "ENGINE_VARIABLE",
    "Cached",
    "Capabilities",
    "Completion",
    "ContextLengthError",
    "EngineError",
    "EngineRequestError",
    "EngineResponseError",
    "EngineUnavailable",
    "Identity",
    "InferenceEngine",
    "InvalidOptionError",
    "LlamaCppEngine",
    "ModelFileError",
    "OpenAIEngine",
    "Options",
    "ParseError",
    "Request",
    "ScriptedEngine",
    "SpangraphHomeError",
    "TransientEngineError",
    "cached",
    "check_options",
    "default",
    "default_spec",
    "options",
    "set_default",
]
