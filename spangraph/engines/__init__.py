"""Engines: the fixed generate protocol and the engines that implement its primitive.

This is both the API for choosing and configuring engines and the API for
writing one: a new engine subclasses ``InferenceEngine``, declares its
``Capabilities``, maps the ``CANONICAL_OPTIONS`` it supports, and implements
``_complete`` (and optionally ``_stream``), taking a ``Request`` and returning
a ``Completion`` (with ``spangraph.nodes.Usage`` and ``Timings``). An engine
that also refines the protocol's cache steps finds the memo and prefix keys
in ``spangraph.lowlevel``.

``LlamaCppEngine`` and ``OpenAIEngine`` are imported on first use, so that
``import spangraph`` loads neither llama.cpp nor the openai client.
"""

import typing as _typing

from ._base import InferenceEngine as InferenceEngine
from ._default import default as default
from ._default import set_default as set_default
from ._errors import ContextLengthError as ContextLengthError
from ._errors import EngineError as EngineError
from ._errors import EngineRequestError as EngineRequestError
from ._errors import EngineResponseError as EngineResponseError
from ._errors import EngineUnavailable as EngineUnavailable
from ._errors import InvalidOptionError as InvalidOptionError
from ._errors import ModelFileError as ModelFileError
from ._errors import ParseError as ParseError
from ._errors import SpangraphHomeError as SpangraphHomeError
from ._errors import TransientEngineError as TransientEngineError
from ._options import CANONICAL as CANONICAL_OPTIONS
from ._remote import EngineSpec as EngineSpec
from ._remote import ExecutorError as ExecutorError
from ._scripted import ScriptedEngine as ScriptedEngine
from ._states import Cached as Cached
from ._states import Identity as Identity
from ._states import Options as Options
from ._states import cached as cached
from ._states import options as options
from ._types import Capabilities as Capabilities
from ._types import Completion as Completion
from ._types import Request as Request
from ._types import ToolRequest as ToolRequest
from ._types import tool_reply_text as tool_reply_text

if _typing.TYPE_CHECKING:
    from ._llamacpp import LlamaCppEngine as LlamaCppEngine
    from ._openai import OpenAIEngine as OpenAIEngine


def __getattr__(name: str) -> _typing.Any:
    if name == "LlamaCppEngine":
        from ._llamacpp import LlamaCppEngine

        return LlamaCppEngine
    if name == "OpenAIEngine":
        from ._openai import OpenAIEngine

        return OpenAIEngine
    raise AttributeError(f"module 'spangraph.engines' has no attribute {name!r}")


__all__ = [
    "CANONICAL_OPTIONS",
    "Cached",
    "Capabilities",
    "Completion",
    "ContextLengthError",
    "EngineError",
    "EngineRequestError",
    "EngineResponseError",
    "EngineSpec",
    "EngineUnavailable",
    "ExecutorError",
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
    "ToolRequest",
    "TransientEngineError",
    "cached",
    "default",
    "options",
    "set_default",
    "tool_reply_text",
]
