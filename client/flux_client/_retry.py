"""When and how long to wait before sending a request again."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from flux_client.errors import FluxError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for errors marked ``retryable`` (UNAVAILABLE,
    503, connection failures). Client errors (4xx), overload (429) and deadlines are
    never retried: sending them again would fail the same way or waste the server's time."""

    max_attempts: int = 4
    """Attempts in all, the first included; 1 turns retries off."""
    initial_backoff: float = 0.2
    """Seconds; the ceiling of the first wait, doubled for each further attempt."""
    max_backoff: float = 5.0
    """Seconds; no wait is longer than this (nor than the server's Retry-After)."""

    def delay(self, attempt: int, error: FluxError, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        wait = (rng or random).uniform(0, ceiling)
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_backoff))
        return wait

    def next_delay(self, attempt: int, error: FluxError, deadline: float | None) -> float | None:
        """The wait before the next attempt, or ``None`` when ``error`` should be raised:
        not retryable, attempts used up, or no time left before ``deadline``
        (``time.monotonic()`` seconds)."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt, error)
        if deadline is not None and time.monotonic() + wait >= deadline:
            return None
        return wait
