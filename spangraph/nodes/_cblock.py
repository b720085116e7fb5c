"""``CBlock``: an immutable piece of text."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, final

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._digest import digest_text

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@final
class CBlock:
    """Immutable text, hashable by content.

    ``cache=True`` marks text worth keeping as KV state in the engine (a
    shared document, a long system prompt); it is part of the content, so a
    cached and an uncached block of the same text are different spans.
    ``meta`` is free-form metadata: it travels with the block but is not
    content (it is not in the id, equality or the prompt).
    """

    __slots__ = ("_id", "cache", "meta", "text")

    text: str
    cache: bool
    meta: Mapping[str, Any]
    _id: str | None

    def __init__(self, text: str, *, cache: bool = False, meta: Mapping[str, Any] | None = None):
        if not isinstance(text, str):
            raise TypeError(f"CBlock text must be str, got {type(text).__name__}")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "cache", bool(cache))
        object.__setattr__(self, "meta", MappingProxyType(dict(meta)) if meta else _EMPTY)
        object.__setattr__(self, "_id", None)

    @property
    def id(self) -> str:
        """The content id (see ``spangraph.nodes._digest``)."""
        if self._id is None:
            object.__setattr__(self, "_id", digest_text("block", self.text, self.cache))
        assert self._id is not None
        return self._id

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CBlock is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CBlock is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CBlock):
            return NotImplemented
        return self.text == other.text and self.cache == other.cache

    def __hash__(self) -> int:
        return hash((self.text, self.cache))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"CBlock({text!r}{', cache=True' if self.cache else ''})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.text, self.cache, dict(self.meta)))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # A plain str is accepted wherever a CBlock is expected.
        return core_schema.no_info_plain_validator_function(
            _coerce_block,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda b: b.text),
        )


def _coerce_block(value: Any) -> CBlock:
    if isinstance(value, CBlock):
        return value
    if isinstance(value, str):
        return CBlock(value)
    raise TypeError(f"expected a CBlock or str, got {type(value).__name__}")


def _rebuild(text: str, cache: bool, meta: dict[str, Any]) -> CBlock:
    return CBlock(text, cache=cache, meta=meta)
