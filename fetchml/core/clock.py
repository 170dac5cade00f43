"""The time services read for their rules: aging, leases, reservations, rate limits.

Services take a `Clock` instead of calling `datetime.now` / `time.monotonic`, so tests of
time-dependent rules move time forward instead of sleeping:

- `SystemClock`: the real clocks, what a server uses.
- `ManualClock`: for in-process tests; time moves only when the test calls `advance`.
- `OffsetFileClock`: the system clock plus an offset read from a file, so a test that drives a
  real server process can move that process's time (FETCHML_CLOCK_OFFSET_FILE, a testing aid:
  there is no API for it, only whoever can write the file can move the clock).

Time that measures the server itself (how long a write waited for its lock, how late the
sweeper woke, request durations, cache ages) stays on the real clocks: it is about this
process's health, not about a rule users see.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

log = logging.getLogger("fetchml.clock")


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


class OffsetFileClock:
    """The system clock plus the number of seconds written in `path` (0 while the file is absent).

    The file is re-read only when its identity changes (inode, size, mtime), so a read costs one
    stat. Write it atomically (write a temporary file, then rename it over `path`): a rename
    gives a new inode, which is seen even when two writes fall within one mtime tick. A file
    that does not hold a finite number is logged and ignored (the last good offset stays).
    `monotonic` never goes backwards, even if the offset is lowered."""

    def __init__(self, path: Path, base: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.base = base
        self._key: tuple[int, int, int] | None = None
        self._offset = 0.0
        self._last_mono = float("-inf")
        self._lock = threading.Lock()

    def offset(self) -> float:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            with self._lock:
                self._key, self._offset = None, 0.0
            return 0.0
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key == self._key:
                return self._offset
        try:
            text = self.path.read_text()
            value = float(text.strip())
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(text)
        except (OSError, ValueError):
            log.warning("clock offset file %s does not hold a number of seconds; ignored", self.path)
            value = self._offset
        with self._lock:
            self._key, self._offset = key, value
            return value

    def now(self) -> datetime:
        return self.base.now() + timedelta(seconds=self.offset())

    def monotonic(self) -> float:
        value = self.base.monotonic() + self.offset()
        with self._lock:
            if value < self._last_mono:
                return self._last_mono
            self._last_mono = value
            return value


def write_offset_file(path: Path, seconds: float) -> None:
    """Set the offset an `OffsetFileClock` on `path` adds, atomically (see that class)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(f"{float(seconds)!r}\n")
    os.replace(tmp, path)


def clock_from_settings(offset_file: Path | None) -> Clock:
    if offset_file is None:
        return SYSTEM_CLOCK
    log.warning("the clock adds the offset in %s (FETCHML_CLOCK_OFFSET_FILE): a testing aid", offset_file)
    return OffsetFileClock(offset_file)
