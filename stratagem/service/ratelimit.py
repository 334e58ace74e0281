"""Deterministic token-bucket rate limiting, one bucket per API token, with an injected clock."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class TokenBucket:
    """`burst` requests at once, refilled continuously at `per_second` (clock in seconds)."""

    def __init__(self, burst: int, per_second: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.per_second = per_second
        self.clock = clock
        self._level: dict[str, float] = {}
        self._stamp: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token for `key`: 0.0 if allowed, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            level = self._level.get(key, float(self.burst))
            last = self._stamp.get(key, now)
            level = min(float(self.burst), level + max(0.0, now - last) * self.per_second)
            self._stamp[key] = now
            if level >= 1.0:
                self._level[key] = level - 1.0
                return 0.0
            self._level[key] = level
            return (1.0 - level) / self.per_second

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
