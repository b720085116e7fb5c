"""``MemoEntry``: the one shape of an output-memo entry, read and written.

The generate protocol writes an entry with ``MemoEntry.to_json()`` (step 7)
and reads one back with ``MemoEntry.from_json()`` (step 3). Stores keep any
JSON object and know nothing of this shape; the protocol treats a stored
object that ``from_json`` refuses as a bad entry (skipped, counted,
recomputed), so a memo written by hand, by another program or by a buggy
store cannot fail a generation.

The JSON form (unchanged since the first memo)::

    {"text": "...", "finish_reason": "stop" | null,
     "usage": [input_tokens, output_tokens, cached_input_tokens],
     "timings": [queue_ms, prefill_ms, decode_ms, total_ms]}

Keys other than these are ignored, so a later spangraph may add some.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..nodes import Timings, Usage

_NO_USAGE = Usage()
_NO_TIMINGS = Timings()


@dataclass(frozen=True, slots=True)
class MemoEntry:
    """What the memo keeps of a generation: its text, why it stopped, and the
    usage and timings of the call that made it (a hit reports them in
    ``thunk.facts.memo_usage``; the hit itself spends no tokens)."""

    text: str
    finish_reason: str | None = None
    usage: Usage = _NO_USAGE
    timings: Timings = _NO_TIMINGS

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": list(self.usage),
            # The four durations (the stored format); the time to the first token is
            # the streaming call's, not the entry's.
            "timings": list(self.timings[:4]),
        }

    @classmethod
    def from_json(cls, value: object) -> MemoEntry:
        """The entry a stored JSON value holds.

        Raises ``ValueError`` naming the field that is missing or of the wrong
        type (never quoting the stored value: it is model text).
        """
        if not isinstance(value, dict):
            raise ValueError(f"a memo entry is a JSON object, not {_json_type(value)}")
        text = value.get("text")
        if not isinstance(text, str):
            raise ValueError(f"a memo entry's text is a string, not {_json_type(text)}")
        finish_reason = value.get("finish_reason")
        if finish_reason is not None and not isinstance(finish_reason, str):
            raise ValueError(
                f"a memo entry's finish_reason is a string or null, not {_json_type(finish_reason)}"
            )
        usage = value.get("usage")
        if not (
            isinstance(usage, list)
            and len(usage) == 3
            and all(type(n) is int and n >= 0 for n in usage)
        ):
            raise ValueError("a memo entry's usage is a list of 3 token counts (integers >= 0)")
        timings = value.get("timings")
        if not (
            isinstance(timings, list)
            and len(timings) == 4
            and all(type(t) in (int, float) and math.isfinite(t) and t >= 0 for t in timings)
        ):
            raise ValueError("a memo entry's timings are a list of 4 durations (numbers >= 0)")
        return cls(text, finish_reason, Usage(*usage), Timings(*(float(t) for t in timings)))


def _json_type(value: object) -> str:
    """The JSON name of a value's type (for messages that must not quote the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
