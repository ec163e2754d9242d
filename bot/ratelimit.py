"""Token-bucket rate limits per client address and per session, in memory (one instance's view)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Allow `per_minute` requests per key on average, with bursts of up to `burst`; 0 turns the limit off.

    Args:
        per_minute: the sustained rate.
        burst: how many requests may come at once after a quiet spell.
        max_keys: buckets kept at most; the longest idle are dropped first (a flood of new keys cannot grow memory).
    """

    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for `key`; False when its bucket is empty."""
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            allowed = bucket.tokens >= 1.0
            if allowed:
                bucket.tokens -= 1.0
            self._buckets[key] = bucket  # re-inserted last: dict order is least recently used first
            while len(self._buckets) > self.max_keys:
                del self._buckets[next(iter(self._buckets))]
            return allowed

    def exhausted(self, key: str, now: float | None = None) -> bool:
        """Whether `key` has no token left, without taking one."""
        if self.rate <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            return bucket is not None and bucket.tokens + (now - bucket.stamp) * self.rate < 1.0

    def retry_after(self) -> int:
        """Whole seconds until one more token arrives."""
        return max(1, int(1 / self.rate + 0.999)) if self.rate > 0 else 0
