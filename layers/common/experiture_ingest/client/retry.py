"""When to retry and how long to wait: one policy for every call.

Exponential backoff with full jitter, capped, bounded by a total budget of attempts and seconds.
A server's ``Retry-After`` (seconds or an HTTP date) is honoured as a floor.

>>> policy = RetryPolicy(max_attempts=3, budget_seconds=10, rng=lambda: 1.0)
>>> policy.backoff(1), policy.backoff(2), policy.backoff(10)
(0.5, 1.0, 20.0)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from experiture_ingest.client.errors import ExperitureError


@dataclass(frozen=True)
class RetryPolicy:
    """Delay ``min(cap, base * 2**(attempt-1)) * U(0, 1)``, within ``max_attempts`` and ``budget_seconds``."""

    max_attempts: int = 5
    budget_seconds: float = 60.0
    base_seconds: float = 0.5
    cap_seconds: float = 20.0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before the retry that follows failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return float(ceiling * self.rng())

    def next_delay(self, error: ExperitureError, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before retrying after ``error``, or None when the call must give up.

        ``attempt`` is the number of attempts made so far; ``elapsed`` the seconds spent on the call.
        """
        if not error.retryable or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if elapsed + delay > self.budget_seconds:
            return None
        return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
