"""Errors raised for bad spans. Each names the span path where it was found."""

from __future__ import annotations


class SpanError(Exception):
    """A span (or a graph of spans) is malformed.

    ``path`` is the span path from the root that was being walked, e.g.
    ``Report.parts()[2].parts()[0]``; it is empty when the error is not tied
    to a position in a graph (a class definition, for instance).
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)

    def at(self, path: str) -> SpanError:
        """This error, placed at ``path`` (when it does not know its place yet)."""
        if self.path:
            return self
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.path = path
        clone.args = (f"{path}: {self.reason}",)
        return clone


class CycleError(SpanError):
    """A component is reachable from its own parts."""


class NotASpanError(SpanError, TypeError):
    """A part is not a CBlock, Component or ModelOutputThunk."""


class TemplateError(SpanError):
    """A component's template names a field it does not have, or leaves a part out."""


class DigestError(SpanError, TypeError):
    """A parameter cannot be serialised into a content digest."""


class ParameterError(SpanError, TypeError):
    """A component's parameter field was given a span; declare the field as a part
    (annotate it ``Span``) to have the span's text in the prompt."""


class MissingProducerError(SpanError):
    """A thunk has no producer: it was not declared with ``generate()``."""


class ThunkNotDoneError(SpanError, RuntimeError):
    """A thunk's value was read before its generation finished."""


class ParseError(SpanError, ValueError):
    """A model output could not be parsed into the component's output type.

    ``raw`` keeps the whole output, so nothing the model produced is lost (the
    message shows it clipped); ``expected`` names the type; ``max_tokens`` is
    the token count the output was cut off at (``None`` when it ended on its
    own); ``hint`` says what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str,
        expected: str,
        path: str = "",
        max_tokens: int | None = None,
    ) -> None:
        self.raw = raw
        self.expected = expected
        self.problem = message
        self.max_tokens = max_tokens
        self.hint = _CUT_OFF_HINT if max_tokens is not None else _RETRY_HINT
        if max_tokens is not None:
            cut = f"output was cut off at max_tokens ({max_tokens} tokens): {message}"
        else:
            cut = message
        super().__init__(
            f"{cut} (expected {expected}; raw output {_clip(raw)!r}). {self.hint}", path=path
        )

    def cut_off(self, max_tokens: int) -> ParseError:
        """This error, for an output the token limit cut off after ``max_tokens`` tokens."""
        return type(self)(
            self.problem,
            raw=self.raw,
            expected=self.expected,
            path=self.path,
            max_tokens=max_tokens,
        )


_RETRY_HINT = (
    "To retry it, add ParseError to RetryPolicy(retry_on=...) (this helps when sampling "
    "varies: temperature > 0); to repair it, sample() it with a RejectionSampler."
)
_CUT_OFF_HINT = (
    "Raise max_tokens, or bound the output (Field(max_length=...) on its strings and lists)."
)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
