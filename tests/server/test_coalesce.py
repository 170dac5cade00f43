"""server/coalesce.py: a response's writes within one turn of the event loop leave as one write
on the connection's real transport (a socket pair here), in order, and nothing is held back:
past FLUSH_BYTES at once, and everything before the connection closes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fetchml.server.coalesce import FLUSH_BYTES, _JoinedWrites

Body = Callable[[_JoinedWrites, list[bytes], socket.socket], Awaitable[None]]


def run(body: Body) -> None:
    async def main() -> None:
        ours, peer = socket.socketpair()
        peer.settimeout(5)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        sent: list[bytes] = []  # what reached the real transport, one entry per write
        real_write = transport.write

        def counted(data: Any) -> None:
            sent.append(bytes(data))
            real_write(data)

        transport.write = counted  # type: ignore[method-assign]
        joined = _JoinedWrites(transport, loop)  # type: ignore[arg-type]
        try:
            await body(joined, sent, peer)
        finally:
            transport.close()
            peer.close()

    asyncio.run(main())


def read(peer: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = peer.recv(n - len(got))
        assert chunk, "closed early"
        got += chunk
    return got


def test_writes_in_one_turn_leave_as_one() -> None:
    async def body(joined: _JoinedWrites, sent: list[bytes], peer: socket.socket) -> None:
        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        joined.write(b"{}")
        assert sent == [] and joined.get_write_buffer_size() >= 40  # held until the turn ends
        await asyncio.sleep(0)
        assert sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        assert read(peer, len(sent[0])) == sent[0]
        joined.write(b"next")  # a later turn: a write of its own
        await asyncio.sleep(0)
        assert sent[1:] == [b"next"] and read(peer, 4) == b"next"

    run(body)


def test_a_big_body_is_not_held() -> None:
    async def body(joined: _JoinedWrites, sent: list[bytes], peer: socket.socket) -> None:
        joined.write(b"head")
        joined.write(b"x" * FLUSH_BYTES)
        assert [len(s) for s in sent] == [4 + FLUSH_BYTES]  # at once, without waiting for the turn
        joined.write(b"tail")
        await asyncio.sleep(0)
        assert sent[1:] == [b"tail"]
        assert read(peer, 8 + FLUSH_BYTES) == b"head" + b"x" * FLUSH_BYTES + b"tail"

    run(body)


@pytest.mark.parametrize("then", ["close", "write_eof"])
def test_what_was_written_goes_out_before_the_end(then: str) -> None:
    async def body(joined: _JoinedWrites, sent: list[bytes], peer: socket.socket) -> None:
        joined.write(b"last words")
        if then == "close":
            joined.close()
        else:
            joined.write_eof()
        await asyncio.sleep(0.05)
        assert sent == [b"last words"]
        assert read(peer, 10) == b"last words"
        assert peer.recv(1) == b""  # then the end

    run(body)
