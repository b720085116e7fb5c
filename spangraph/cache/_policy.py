"""``CachePolicy``: which generations the output memo keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class CachePolicy:
    """``auto`` memoises deterministic generations only (temperature 0 or an
    explicit seed); ``always`` memoises every generation (the sample index in
    the key keeps repeated samples apart); ``never`` bypasses the memo.
    ``ttl`` (seconds) expires entries written under this policy.
    """

    mode: Mode = "auto"
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "always", "never"):
            raise ValueError(f"CachePolicy mode must be 'auto', 'always' or 'never': {self.mode!r}")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"CachePolicy ttl must be > 0 seconds or None, got {self.ttl}")

    def applies(self, options: Mapping[str, Any]) -> bool:
        if self.mode == "never":
            return False
        if self.mode == "always":
            return True
        return options.get("temperature") == 0.0 or "seed" in options


#: The default policy: memoise deterministic generations only.
AUTO = CachePolicy()
