"""Content digests: the stable ids that spans are known by.

A span's id is a Merkle hash: blake2b over its kind, its class, its
parameters (canonical JSON) and the ids of its parts, so equal content gives
equal ids in every process and a change anywhere below a span changes the
span's id. Python's ``hash()`` is never used (it is salted per process).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

from ._errors import DigestError

DIGEST_SIZE = 16


def canonical_json(value: Any, *, path: str = "", what: str = "parameter") -> str:
    """Serialise ``value`` deterministically, or raise ``DigestError`` naming ``path``."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise DigestError(
            f"{what} is not JSON-serialisable, so it cannot be part of a content id: {exc}",
            path=path,
        ) from None


def digest(kind: str, cls: str, params: str, children: Iterable[str]) -> str:
    # Fields are joined by NUL: kind and class names never contain it, and
    # parameters are JSON or repr text, which escape control characters.
    material = "\x00".join((kind, cls, params, *children))
    try:
        return blake2b(material.encode(), digest_size=DIGEST_SIZE).hexdigest()
    except UnicodeEncodeError:
        check_text(params, "a parameter")
        raise


def digest_text(kind: str, text: str, flag: bool) -> str:
    material = f"{kind}\x00{'1' if flag else '0'}\x00{text}"
    try:
        return blake2b(material.encode(), digest_size=DIGEST_SIZE).hexdigest()
    except UnicodeEncodeError:
        check_text(text, "text")
        raise


def check_text(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate, from bytes decoded with
    ``surrogateescape`` or a bad ``\\ud800`` escape): no engine can take it, and it has no
    UTF-8 form to digest. A ``DigestError``; the walk adds the span path."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise DigestError(
            f"{what} holds a lone surrogate ({text[exc.start]!r} at index {exc.start}), which "
            "is not valid Unicode: decode the source bytes with errors='replace' (or fix the "
            "escape that made it)"
        ) from None
