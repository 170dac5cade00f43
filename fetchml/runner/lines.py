"""Splits a task's output bytes into lines without ever holding more than one capped line.

Both executors read output in bounded pieces and feed them here. A line longer than
MAX_LINE_BYTES keeps its first bytes and ends with a marker saying how long it was; the rest of
it is counted and thrown away as it arrives, so one 600 MB line costs the worker the same
memory as one 16 KB line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fetchml.core.protocol import MAX_LOG_LINE_CHARS

__all__ = ["MAX_LINE_BYTES", "READ_SIZE", "LineSplitter", "iter_lines", "truncation_marker"]

# A line of at most this many bytes passes whole. Bytes bound characters from above, so a line
# (or a truncated line with its marker) always fits the server's per-line limit.
MAX_LINE_BYTES = MAX_LOG_LINE_CHARS
# What a truncated line keeps: room is left for the marker.
_KEEP_BYTES = MAX_LINE_BYTES - 64
READ_SIZE = 64 * 1024


def truncation_marker(total_bytes: int) -> str:
    return f"… [line truncated: {total_bytes} bytes]"


def _cut(data: bytes | bytearray, limit: int) -> int:
    """Where to cut `data` to at most `limit` bytes without splitting a UTF-8 character."""
    if len(data) <= limit:
        return len(data)
    i = limit
    # data[i] is the first byte left out; a continuation byte means its character began earlier.
    while i > limit - 4 and i > 0 and (data[i] & 0xC0) == 0x80:
        i -= 1
    return i


def _text(raw: bytes | bytearray) -> str:
    text = bytes(raw).decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\r") else text


class LineSplitter:
    """Bytes in, lines out: utf-8 (invalid bytes replaced), the newline (and a CR before it)
    removed, lines capped at `max_bytes` with a truncation marker. A partial last line is kept
    (at most `max_bytes` of it) until more bytes or `end()` come."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._keep = max(1, max_bytes - (MAX_LINE_BYTES - _KEEP_BYTES))
        self._pending = bytearray()  # the start of the current line, at most max_bytes
        self._over = 0  # bytes of the current line beyond what _pending holds (thrown away)

    def _add(self, piece: bytes | memoryview) -> None:
        room = self.max_bytes + 1 - len(self._pending)  # one byte more tells "longer than max"
        if room > 0:
            self._pending += piece[:room]
            self._over += max(0, len(piece) - room)
        else:
            self._over += len(piece)

    def _line(self) -> str:
        pending, over = self._pending, self._over
        self._pending, self._over = bytearray(), 0
        total = len(pending) + over
        if total <= self.max_bytes:
            return _text(pending)
        if pending.endswith(b"\r") and over == 0 and total - 1 <= self.max_bytes:
            return _text(pending)
        return _text(pending[: _cut(pending, self._keep)]) + truncation_marker(total)

    def feed(self, data: bytes) -> list[str]:
        parts = data.split(b"\n")
        if len(parts) == 1:
            self._add(data)
            return []
        out: list[str] = []
        self._add(parts[0])
        out.append(self._line())
        limit = self.max_bytes
        for part in parts[1:-1]:
            if len(part) <= limit:
                out.append(_text(part))
            else:
                self._add(part)
                out.append(self._line())
        self._add(parts[-1])
        return out

    def end(self) -> list[str]:
        if not self._pending and not self._over:
            return []
        return [self._line()]


def iter_lines(read: Callable[[], bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Lines from a `read()` that returns the next bounded piece of bytes (b"" at the end)."""
    splitter = LineSplitter(max_bytes)
    while True:
        data = read()
        if not data:
            break
        yield from splitter.feed(data)
    yield from splitter.end()
