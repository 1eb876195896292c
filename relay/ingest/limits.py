"""Token-bucket rate limits per client IP and per token (DESIGN §3.4: 429 + Retry-After).

Buckets are keyed by a keyed hash of the IP or token under a random per-process key, so the
limiter's memory holds no addresses or credentials (P1). The table is bounded: past
`max_tracked` keys, buckets that have refilled completely are forgotten (they hold no state a
fresh bucket would not), and if that is not enough the oldest half goes.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max_tracked = max_tracked
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    def take(self, identity: str, amount: float = 1.0) -> float:
        """Spend `amount` tokens of `identity`'s bucket: 0.0 if allowed, else seconds to wait.

        A refused request spends nothing, so a client that backs off as told gets through.
        `amount` must not exceed the burst (config validation sees to that).
        """
        key = hmac.digest(self._key, identity.encode(), "sha256")[:16]
        now = self._clock()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if amount > tokens:
            self._buckets[key] = (tokens, now)
            return (amount - tokens) / self._rate
        self._buckets[key] = (tokens - amount, now)
        if len(self._buckets) > self._max_tracked:
            self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        full_after = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) > self._max_tracked:
            keep = list(self._buckets.items())[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
