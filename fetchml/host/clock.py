"""The offset-file clock: the system clock plus a number of seconds read from a file.

A test that drives a real server process moves that process's time by writing the file
(FETCHML_CLOCK_OFFSET_FILE, a testing aid: there is no API for it, only whoever can write the
file can move the clock). The `Clock` protocol and the other clocks are in fetchml/core/clock.py.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path

from fetchml.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("fetchml.clock")


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
