"""The access log's writer: one line per request, in the logging module's format, written to
stderr in batches.

Through `logging`, a line cost a LogRecord, a handler lock and a flush (one write(2) each):
about a tenth of a submission's CPU at a thousand requests a second. Here a line is one
f-string, and the lines go out in one write at most `interval` seconds after the first of them
(or once `max_lines` are waiting), and when the process exits. Each batch is written whole, so
it never splits a line or interleaves with another writer's line.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time

DEFAULT_INTERVAL = 0.2


class AccessLog:
    def __init__(self, fd: int = 2, *, interval: float = DEFAULT_INTERVAL, max_lines: int = 512) -> None:
        self._fd = fd
        self._interval = interval
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._second = -1
        self._stamp = ""
        atexit.register(self.flush)

    def write(self, message: str) -> None:
        """Queue one line (`message` without its newline), stamped as logging's
        `%(asctime)s INFO fetchml.access` prefix would stamp it."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = f"{self._stamp},{int((now - second) * 1000):03d} INFO fetchml.access {message}\n"
        with self._lock:
            self._lines.append(line)
            full = len(self._lines) >= self._max_lines
            schedule = not self._scheduled and not full
            if schedule:
                self._scheduled = True
        if full:
            self.flush()
        elif schedule:
            try:
                asyncio.get_running_loop().call_later(self._interval, self.flush)
            except RuntimeError:  # no event loop on this thread: nothing would flush later
                self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._scheduled = self._lines, [], False
        if not lines:
            return
        data = "".join(lines).encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # stderr gone (a closed pipe): the requests themselves are unaffected
