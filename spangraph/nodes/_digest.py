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
    return blake2b(material.encode(), digest_size=DIGEST_SIZE).hexdigest()


def digest_text(kind: str, text: str, flag: bool) -> str:
    material = f"{kind}\x00{'1' if flag else '0'}\x00{text}"
    return blake2b(material.encode(), digest_size=DIGEST_SIZE).hexdigest()
