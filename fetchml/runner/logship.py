"""Ships an attempt's output lines to the server in numbered chunks.

Lines are buffered and sent by a background thread every `interval` seconds (or when a chunk
fills), so a chatty task costs a few requests a second, not one per line. Each chunk carries
the number of its first line, which makes a resend after a network error harmless. close()
sends everything still buffered: the last lines before an exit or a cancel are never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from fetchml.client.api import FetchmlClient
from fetchml.core.errors import ConflictError, FetchmlError
from fetchml.core.protocol import MAX_LOG_LINE_CHARS, MAX_LOG_LINES_PER_CHUNK

log = logging.getLogger("fetchml.runner.logs")

# Well under the server's default 1 MiB request limit, whatever the lines hold.
MAX_CHUNK_BYTES = 256 * 1024


def _chunk(lines: list[str]) -> list[str]:
    size = 0
    for i, line in enumerate(lines[:MAX_LOG_LINES_PER_CHUNK]):
        size += len(line.encode("utf-8", errors="replace")) + 8  # JSON quoting and comma
        if size > MAX_CHUNK_BYTES and i > 0:
            return lines[:i]
    return lines[:MAX_LOG_LINES_PER_CHUNK]


class LogShipper:
    def __init__(
        self,
        client: FetchmlClient,
        task_id: str,
        attempt: int,
        *,
        interval: float = 0.2,
        tail_lines: int = 100,
        ship: bool = True,
    ) -> None:
        self.client = client
        # Only rank 0 of a gang ships its lines (one numbered log per attempt); the other
        # nodes keep their tail for their own report.
        self.ship = ship
        self.task_id = task_id
        self.attempt = attempt
        self.interval = interval
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.stale = False  # the server gave this attempt away: stop sending
        self._buf: list[str] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"logs-{task_id[:8]}", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        if len(line) > MAX_LOG_LINE_CHARS:
            line = line[: MAX_LOG_LINE_CHARS - 1] + "…"
        with self._lock:
            self._buf.append(line)
            self.tail.append(line)
            if len(self._buf) >= MAX_LOG_LINES_PER_CHUNK:
                self._wake.set()

    def output(self) -> str:
        return "\n".join(self.tail)

    def _flush(self) -> None:
        if not self.ship:
            with self._lock:
                self._buf.clear()
            return
        while not self.stale:
            with self._lock:
                chunk = _chunk(self._buf)
            if not chunk:
                return
            for delay in (0.2, 0.5, 1, 2, 5, 5, 5):
                try:
                    self.client.logs.append(self.task_id, self.attempt, self._sent, chunk)
                    break
                except ConflictError:
                    self.stale = True
                    return
                except FetchmlError as exc:
                    log.warning("log upload for %s failed (%s); retrying", self.task_id, exc.message)
                    time.sleep(delay)
            else:
                log.error("giving up on %d log lines of task %s", len(chunk), self.task_id)
            with self._lock:
                del self._buf[: len(chunk)]
                self._sent += len(chunk)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._flush()
            if self._closed:
                self._flush()
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()
