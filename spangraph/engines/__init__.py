"""Engines: the fixed generate protocol and the engines that implement its primitive."""

from ._base import InferenceEngine
from ._default import default
from ._errors import (
    ContextLengthError,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    InvalidOptionError,
    ModelFileError,
    ParseError,
    TransientEngineError,
)
from ._options import CANONICAL as CANONICAL_OPTIONS
from ._options import check_options
from ._scripted import ScriptedEngine
from ._states import Identity, Options, options
from ._types import Capabilities, Completion, Request

__all__ = [
    "CANONICAL_OPTIONS",
    "Capabilities",
    "Completion",
    "ContextLengthError",
    "EngineError",
    "EngineRequestError",
    "EngineUnavailable",
    "Identity",
    "InferenceEngine",
    "InvalidOptionError",
    "ModelFileError",
    "Options",
    "ParseError",
    "Request",
    "ScriptedEngine",
    "TransientEngineError",
    "check_options",
    "default",
    "options",
]
