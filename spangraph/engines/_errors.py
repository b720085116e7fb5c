"""Engine errors: a small hierarchy the scheduler's retry policy keys on."""

from __future__ import annotations

from ..nodes import ParseError


class EngineError(Exception):
    """Base of errors raised by engines."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached (connection refused, server stopped)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(f"{message} ({url})" if url else message)


class EngineResponseError(EngineError):
    """The server answered, but not with a completion: a body that is not JSON, or JSON
    of another shape (a proxy's error page, a wrong ``base_url``). The message has the
    status, the content type and the start of the body."""


class TransientEngineError(EngineError):
    """A failure worth retrying: 5xx, a timeout, an overloaded server."""


class EngineRequestError(EngineError, ValueError):
    """The request itself is wrong (4xx, invalid options): retrying cannot help."""


class InvalidOptionError(EngineRequestError):
    """A model option is unknown or out of range."""


class ContextLengthError(EngineRequestError):
    """The prompt does not fit the model's context window."""

    def __init__(self, message: str, *, tokens: int | None = None, limit: int | None = None):
        self.tokens = tokens
        self.limit = limit
        super().__init__(message)


class ModelFileError(EngineError):
    """The model file is missing, is not a GGUF file, does not match its digest, or
    llama.cpp cannot load it. The message names the file."""


class SpangraphHomeError(ValueError):
    """``SPANGRAPH_HOME`` (or an engine's ``home``) cannot be spangraph's folder: it
    names an unset variable, is a file, or cannot be made or written. The message
    names the setting and the path."""


__all__ = [
    "ContextLengthError",
    "EngineError",
    "EngineRequestError",
    "EngineResponseError",
    "EngineUnavailable",
    "InvalidOptionError",
    "ModelFileError",
    "ParseError",
    "SpangraphHomeError",
    "TransientEngineError",
]
