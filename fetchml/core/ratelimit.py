"""Token buckets keyed by caller. Pure: time is passed in."""

from __future__ import annotations

import math
from collections import OrderedDict

# Float slack: (1 - tokens) / rate may come out as 7.000000000000001 for an exact 7 s, and a
# caller who waits exactly Retry-After may find 0.9999999999 tokens. Neither may cost a second.
_TOKEN_EPS = 1e-6
_WAIT_EPS = 1e-9


class TokenBuckets:
    def __init__(self, per_minute: int, *, burst: int | None = None, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else per_minute)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_time(self, key: str, now: float) -> int:
        """Whole seconds until `key` has a token again, without taking one (0: it has one now)."""
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0 - _TOKEN_EPS:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self.rate - _WAIT_EPS))

    def take(self, key: str, now: float) -> int:
        """Take one token. Returns 0 when allowed, else whole seconds until a token is back."""
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0 - _TOKEN_EPS:
            self._buckets[key] = (max(tokens - 1.0, 0.0), now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate - _WAIT_EPS))
