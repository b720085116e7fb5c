"""The output-memo key.

``memo_key()`` is a blake2b digest (32 bytes, hex) of, in this order:

1. **The engine fingerprint** — engine kind, model identity (for llama.cpp the
   model file's sha256, so a different or re-quantised file never hits), and
   for remote engines the server's base URL.
2. **The rendered prompt segments** — each segment's text, chat role,
   completion-only label flag and ``cache`` flag, in order. This is exactly
   what the engine is sent, so two graphs that render the same prompt share
   entries, whatever components produced it.
3. **The output schema** — constrained decoding changes the output.
4. **The normalised model options** — canonical names after merging engine
   defaults, state and call (``extra:`` pass-throughs included), as sorted JSON.
5. **The sample index** — repeated samples of one prompt stay distinct, and
   a re-run reproduces each sample from its own entry.

Deliberately left out:

- span ids and graph structure: the prompt text already determines the output,
  and leaving them out lets equal prompts from different graphs share entries;
- execution-state objects: their effect is in the prompt (a chat history) and
  the options (``options(...)``), which are in the key;
- load parameters that do not change outputs: slots, context size, threads;
- secrets (API keys) and anything time-dependent.

Because the prompt's text is rendered from finished inputs, a change to any
upstream span changes exactly the keys of the generations downstream of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from hashlib import blake2b
from typing import Any

from ..nodes import Prompt

KEY_VERSION = "spangraph-memo-1"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def memo_key(
    fingerprint: Mapping[str, Any],
    prompt: Prompt,
    schema: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    sample_index: int,
) -> str:
    """The output-memo key of one generation (see the module docstring: what is in it)."""
    h = blake2b(digest_size=32)
    h.update(KEY_VERSION.encode())
    h.update(b"\x00")
    h.update(_canonical(dict(fingerprint)).encode())
    for seg in prompt.segments:
        h.update(b"\x01")
        h.update(f"{seg.role or ''}\x02{int(seg.label)}{int(seg.cache)}\x02".encode())
        h.update(seg.text.encode())
    h.update(b"\x03")
    h.update(_canonical(schema).encode())
    h.update(b"\x03")
    h.update(
        _canonical({k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}).encode()
    )
    h.update(b"\x03")
    h.update(str(sample_index).encode())
    return h.hexdigest()


def prefix_key(fingerprint: Mapping[str, Any], texts: list[str]) -> str:
    """The digest of a cached prompt prefix (the KV store's key)."""
    h = blake2b(digest_size=20)
    h.update(b"spangraph-prefix-1\x00")
    h.update(_canonical(dict(fingerprint)).encode())
    for text in texts:
        h.update(b"\x01")
        h.update(text.encode())
    return h.hexdigest()
