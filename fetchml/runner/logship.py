"""Ships an attempt's output lines to the server in numbered chunks.

Lines are buffered and sent by a background thread every `interval` seconds (or when a chunk
fills), so a chatty task costs a few requests a second, not one per line. Each chunk carries
the number of its first line, which makes a resend after a network error harmless.

What the buffer costs is bounded, whatever the task prints and however long the server is
away: up to `memory_lines` lines / `memory_bytes` bytes stay in memory, the rest goes to an
unlinked spool file (in `spool_dir`) and is read back in chunk-sized pieces. Nothing is dropped
or skipped because the server is unreachable or answers 5xx: the chunk is retried with backoff
and later lines wait in the spool. Shipping stops for good, dropping what is buffered, when:

- the server answers 409/403/404: the attempt is not ours any more (`stale`);
- it answers 422 (a gap: lines it should have are missing, or a malformed chunk) or 401: it will
  never take these lines; the attempt goes on and is reported, only its log stays short;
- it says the task's log quota is spent (later lines would be dropped there anyway);
- the attempt was cancelled (`cancel()`): what was printed before is sent for at most
  `final_flush` seconds, later lines are not buffered at all;
- the spool is full (`spool_bytes`): further lines are counted and one notice line says how
  many were dropped, once the spool has room again.

close() sends everything still buffered (retrying for up to `close_timeout` seconds): the last
lines before an exit are not lost.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections import deque
from itertools import islice
from pathlib import Path
from typing import IO

from fetchml.client.api import FetchmlClient
from fetchml.client.base import ServerUnreachableError
from fetchml.core.errors import (
    BadRequestError,
    ConflictError,
    FetchmlError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)
from fetchml.core.protocol import MAX_LOG_LINE_CHARS, MAX_LOG_LINES_PER_CHUNK

log = logging.getLogger("fetchml.runner.logs")

# Well under the server's default 1 MiB request limit, whatever the lines hold.
MAX_CHUNK_BYTES = 256 * 1024
MEMORY_LINES = 20_000
MEMORY_BYTES = 4 * 1024 * 1024
SPOOL_BYTES = 1024 * 1024 * 1024
# A str costs ~50 bytes besides its characters: counted, so a million empty lines are not free.
_LINE_OVERHEAD = 64
_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


def _chunk(lines: list[str]) -> list[str]:
    size = 0
    for i, line in enumerate(lines[:MAX_LOG_LINES_PER_CHUNK]):
        size += len(line.encode("utf-8", errors="replace")) + 8  # JSON quoting and comma
        if size > MAX_CHUNK_BYTES and i > 0:
            return lines[:i]
    return lines[:MAX_LOG_LINES_PER_CHUNK]


def spool_notice(dropped: int) -> str:
    return f"[fetchml: worker log spool full, {dropped} lines dropped]"


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
        spool_dir: Path | None = None,
        memory_lines: int = MEMORY_LINES,
        memory_bytes: int = MEMORY_BYTES,
        spool_bytes: int = SPOOL_BYTES,
        final_flush: float = 5.0,
        close_timeout: float = 300.0,
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
        self.halted: str | None = None  # why shipping stopped for good (stale, quota, ...)
        self.quota_reached = False
        self.discarded = 0  # lines not shipped: after a halt, a cancel, or with a full spool
        self.spooled = 0  # lines that went through the spool file
        self.memory_lines, self.memory_bytes, self.spool_bytes = memory_lines, memory_bytes, spool_bytes
        self.final_flush, self.close_timeout = final_flush, close_timeout
        self._spool_dir = spool_dir
        self._mem: deque[str] = deque()
        self._mem_bytes = 0
        self._spool: IO[bytes] | None = None
        self._spooling = False  # the spool holds lines older than any new one: new ones go there
        self._spool_read = 0
        self._spool_write = 0
        self._spool_lines = 0  # unread lines in the spool
        self._spool_dropped = 0
        self._sent = 0  # lines the server has acknowledged: the next chunk's start_line
        self._cutoff: int | None = None  # after a cancel: lines numbered from here are not kept
        self._added = 0  # lines numbered so far (acknowledged + buffered)
        self._deadline: float | None = None  # after cancel/close: give up retrying by then
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        # Started by the first line kept: an attempt that prints nothing costs no thread.
        self._thread: threading.Thread | None = None

    # -- the producer side ------------------------------------------------------------------
    def add(self, line: str) -> None:
        if len(line) > MAX_LOG_LINE_CHARS:
            line = line[: MAX_LOG_LINE_CHARS - 1] + "…"
        with self._lock:
            self.tail.append(line)
            if not self.ship or self.halted is not None or self._cutoff is not None:
                self.discarded += 1
                return
            if self._spool_dropped and self._spool_write + 4096 < self.spool_bytes:
                notice, self._spool_dropped = spool_notice(self._spool_dropped), 0
                self._keep(notice)
            self._keep(line)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"logs-{self.task_id[:8]}", daemon=True
                )
                self._thread.start()
            if len(self._mem) + self._spool_lines >= MAX_LOG_LINES_PER_CHUNK or self._spooling:
                self._wake.set()

    def _keep(self, line: str) -> None:
        size = len(line) + _LINE_OVERHEAD
        if not self._spooling and (
            len(self._mem) < self.memory_lines and self._mem_bytes + size <= self.memory_bytes
        ):
            self._mem.append(line)
            self._mem_bytes += size
            self._added += 1
            return
        record = json.dumps(line, ensure_ascii=False).encode("utf-8", errors="replace") + b"\n"
        if self._spool_write + len(record) > self.spool_bytes:
            self._spool_dropped += 1
            self.discarded += 1
            return
        if self._spool is None:
            # Unlinked at once: nothing is left behind, even if the worker is killed.
            self._spool = tempfile.TemporaryFile(dir=self._spool_dir, prefix="fetchml-log-")  # noqa: SIM115
        self._spool.seek(self._spool_write)
        self._spool.write(record)
        self._spool_write += len(record)
        self._spool_lines += 1
        self._spooling = True
        self.spooled += 1
        self._added += 1

    def output(self) -> str:
        return "\n".join(self.tail)

    def cancel(self) -> None:
        """The attempt is cancelled: lines printed from now on are not needed. What is buffered
        is still sent, for at most `final_flush` seconds."""
        with self._lock:
            if self._cutoff is None:
                self._cutoff = self._added
                self._deadline = time.monotonic() + self.final_flush
        self._wake.set()

    # -- the shipping side -----------------------------------------------------------------
    def _take(self) -> list[str]:
        """The next chunk, oldest lines first (called with the lock held)."""
        if not self._mem and self._spool_lines:
            assert self._spool is not None
            self._spool.flush()
            self._spool.seek(self._spool_read)
            size = 0
            while self._spool_lines and len(self._mem) < MAX_LOG_LINES_PER_CHUNK and size < MAX_CHUNK_BYTES:
                record = self._spool.readline()
                self._spool_read += len(record)
                self._spool_lines -= 1
                line = json.loads(record)
                self._mem.append(line)
                self._mem_bytes += len(line) + _LINE_OVERHEAD
                size += len(record)
            if not self._spool_lines:  # drained: new lines may go to memory again
                self._spool.seek(0)
                self._spool.truncate()
                self._spool_read = self._spool_write = 0
                self._spooling = False
        return _chunk(list(islice(self._mem, MAX_LOG_LINES_PER_CHUNK)))

    def _halt(self, why: str) -> None:
        with self._lock:
            if self.halted is None:
                self.halted = why
            self.discarded += len(self._mem) + self._spool_lines
            self._mem.clear()
            self._mem_bytes = 0
            self._spool_lines = 0
            self._spool_read = self._spool_write = 0
            self._spooling = False
            if self._spool is not None:
                self._spool.close()
                self._spool = None

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _send(self, start: int, chunk: list[str]) -> int:
        """Sends `chunk` until the server takes it; how many of its lines it took (0: halted)."""
        attempt = 0
        while True:
            try:
                ack = self.client.logs.append(self.task_id, self.attempt, start, chunk)
            except (ConflictError, ForbiddenError, NotFoundError) as exc:
                log.warning(
                    "task %s attempt %d: %s; its log is closed", self.task_id, self.attempt, exc.message
                )
                self.stale = True
                self._halt("stale")
                return 0
            except (ValidationError, UnauthorizedError) as exc:
                log.error(
                    "task %s: the server refuses its log lines (%s); not sending more",
                    self.task_id,
                    exc.message,
                )
                self._halt("refused")
                return 0
            except BadRequestError as exc:  # 413: more than the server's body limit
                if len(chunk) > 1:
                    chunk = chunk[: len(chunk) // 2]
                    continue
                log.error("task %s: a log line is refused (%s); not sending more", self.task_id, exc.message)
                self._halt("refused")
                return 0
            except FetchmlError as exc:  # unreachable, 5xx, 429: the lines wait and are retried
                if self._past_deadline():
                    log.error(
                        "task %s: giving up on its log after the last retries (%s)", self.task_id, exc.message
                    )
                    self._halt("unreachable")
                    return 0
                delay = _BACKOFF[min(attempt, len(_BACKOFF) - 1)]
                if isinstance(exc, RateLimitedError):
                    delay = max(delay, float(exc.retry_after))
                if attempt == 0 or not isinstance(exc, ServerUnreachableError):
                    log.warning("log upload for %s failed (%s); retrying", self.task_id, exc.message)
                attempt += 1
                if self._deadline is not None:
                    delay = max(0.0, min(delay, self._deadline - time.monotonic()))
                time.sleep(delay)
                continue
            if ack.quota_reached:
                self.quota_reached = True
            return len(chunk)

    def _flush(self) -> None:
        if not self.ship:
            return
        while self.halted is None:
            with self._lock:
                chunk = self._take()
                start = self._sent
            if not chunk:
                return
            if self._cutoff is not None and self._past_deadline():
                log.warning("task %s: cancelled; %d buffered log lines not sent", self.task_id, len(chunk))
                self._halt("cancelled")
                return
            taken = self._send(start, chunk)
            if not taken:
                return
            with self._lock:
                for _ in range(taken):
                    line = self._mem.popleft()
                    self._mem_bytes -= len(line) + _LINE_OVERHEAD
                self._sent += taken
            if self.quota_reached:
                log.warning("task %s: the server's log quota is reached; not sending more", self.task_id)
                self._halt("quota")
                return

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._flush()
            if self._closed:
                self._flush()
                break
        with self._lock:
            if self._spool is not None:
                self._spool.close()
                self._spool = None
            pending = len(self._mem) + self._spool_lines
        if pending:
            log.error("task %s: %d log lines were not sent", self.task_id, pending)

    def close(self) -> None:
        with self._lock:
            deadline = time.monotonic() + self.close_timeout
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
            thread = self._thread
            self._closed = True
        self._wake.set()
        if thread is not None:  # none started: no line was ever kept, nothing to send
            thread.join()

    @property
    def memory_lines_used(self) -> int:
        """Lines held in memory now (the rest of the buffer is in the spool file)."""
        return len(self._mem)

    @property
    def sent(self) -> int:
        """Lines the server has acknowledged."""
        return self._sent
