"""One write per response instead of two: uvicorn's httptools protocol writes a response's head
and its body as two `transport.write` calls, so two `send` syscalls and two TCP segments, each
woken and read separately by the client. Writes made within one turn of the event loop are
joined here and sent as one at the end of the turn (or at once past `FLUSH_BYTES`, so a body
streamed without yielding to the loop is never held in memory here)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_BYTES = 64 * 1024


class _JoinedWrites:
    """The connection's transport, with `write` deferred to the end of the loop's turn."""

    __slots__ = ("_due", "_held", "_loop", "_parts", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self._held = 0
        self._due = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)
        if self._held >= FLUSH_BYTES:
            self._send()
        elif not self._due:
            self._due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._due = False
        self._send()

    def _send(self) -> None:
        if self._parts:
            data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts.clear()
            self._held = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written goes out before the FIN
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        joined = _JoinedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        super().connection_made(joined)  # type: ignore[arg-type]
