"""The time services read for their rules: aging, leases, reservations, rate limits.

Services take a `Clock` instead of calling `datetime.now` / `time.monotonic`, so tests of
time-dependent rules move time forward instead of sleeping:

- `SystemClock`: the real clocks, what a server uses.
- `ManualClock`: for in-process tests; time moves only when the test calls `advance`.
- `OffsetFileClock` (fetchml/host/clock.py, it reads a file): the system clock plus an offset
  read from a file, so a test that drives a real server process can move that process's time.

Time that measures the server itself (how long a write waited for its lock, how late the
sweeper woke, request durations, cache ages) stays on the real clocks: it is about this
process's health, not about a rule users see.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never decreasing: for intervals (rate limits)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """Time stands still until `advance`. Starts at `start` (default: the real time now, so rows
    it stamps look like any others)."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:  # NaN too
            raise ValueError(f"a clock only moves forward, got {seconds!r} s")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
