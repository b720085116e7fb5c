"""Run policies as values."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from ..engines import TransientEngineError

OnError = Literal["raise", "continue"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient failures with exponential backoff.

    Attempt ``n`` (counting from 1) that fails with one of ``retry_on`` is
    followed, while ``n < attempts``, by a wait of
    ``min(max_backoff, backoff * 2 ** (n - 1))``, scaled by a random factor
    in ``[1 - jitter, 1 + jitter]``. ``sleep`` is what waits (inject a fake
    one in tests); ``None`` means ``anyio.sleep``. A timed-out attempt counts
    as a ``TransientEngineError``.

    Parse failures are not retried by default. To retry them, add
    ``ParseError``: ``RetryPolicy(retry_on=(TransientEngineError, ParseError))``.
    A retry asks the same request again, so it helps only when sampling
    varies (``temperature > 0`` and no fixed ``seed``); a failed parse is
    never memoised. To repair instead (a budget of attempts, each one in the
    LogDAG), sample the generation:
    ``sample(action, RejectionSampler([parses_as(Model)], loop_budget=3))``
    tries again after an attempt that does not parse, and raises the last
    ``ParseError`` when none did. An output cut off at ``max_tokens`` says
    so in its ``ParseError``: raise ``max_tokens`` or bound the output
    (``Field(max_length=...)``) rather than retry.
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (TransientEngineError,)
    sleep: Callable[[float], Awaitable[None]] | None = field(default=None, compare=False)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoff values must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.attempts and isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
        if self.jitter:
            base *= 1 + self.jitter * rng.uniform(-1.0, 1.0)
        return max(0.0, base)


NO_RETRY = RetryPolicy(attempts=1)
