"""The server's `/ws` WebSocket (docs/events.md), read synchronously: the feed event payloads of
the key's tasks (a user key: its own; an admin key: every task).

`TaskUpdates` yields the payload of each `task_update` message (`{"id", "type", "at", ...}`,
the same payloads as the SSE streams' events) and answers the server's `ping` with `pong`, so
the server's idle close never comes. The WebSocket has no resume: after a drop it reconnects
with backoff and calls `on_open` again, so the caller can re-read the state it shows. A refused
handshake (401, 403, 429 in the envelope) raises the client's usual exceptions.

`websockets` is imported here only: a client that never opens `/ws` does not load it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from fetchml.client.base import (
    ServerUnreachableError,
    Transport,
    UnexpectedResponseError,
    _raise_for_envelope,
)
from fetchml.core.errors import RateLimitedError, ServiceUnavailableError

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

WS_PATH = "/ws"
DEFAULT_MAX_RECONNECTS = 8  # consecutive failed reconnects before the last error is raised
DEFAULT_BACKOFF = 0.2  # seconds before the first reconnect; doubles up to MAX_BACKOFF
MAX_BACKOFF = 2.0
# The server pings every FETCHML_WS_PING_SECONDS (20): this much silence is a dead connection.
DEFAULT_READ_TIMEOUT = 90.0
CLOSE_TIMEOUT = 2.0


class _Dropped(Exception):
    """The socket ended (closed by the server, the network, a `resync`): reconnect."""


def ws_url(base_url: str) -> str:
    """`http://host:port[/prefix]` -> `ws://host:port[/prefix]/ws` (https -> wss)."""
    url = httpx.URL(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    return str(url.copy_with(scheme=scheme, path=url.path.rstrip("/") + WS_PATH))


class TaskUpdates:
    """Iterate it for feed event payloads (dicts). Iteration ends when `close()` is called (from
    any thread). `on_open()` runs on the iterating thread after every handshake, the first
    included, before any event of that connection is yielded: what it reads is at least as new as
    the socket, and events that came meanwhile follow it (an exception it raises ends the
    iteration). `on_reconnect(attempt, exc)` runs before each reconnect. After `max_reconnects`
    failed reconnects in a row, or a refusal that retrying cannot fix (401, 403), the error is
    raised; a failure before the first handshake is raised at once."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        backoff: float = DEFAULT_BACKOFF,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_open: Callable[[], None] | None = None,
        on_reconnect: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self.url = ws_url(transport.base_url)
        self._key = transport.http.headers.get("X-API-Key")
        self._open_timeout = transport.timeout
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.read_timeout = read_timeout
        self.on_open = on_open
        self.on_reconnect = on_reconnect
        self.opens = 0  # handshakes in all
        self.reconnects = 0
        self.pongs = 0  # pings answered
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._ws: ClientConnection | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.events()

    def __enter__(self) -> TaskUpdates:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop: a `recv` blocked on another thread returns and the iteration ends quietly."""
        self._closed.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            self._close_quietly(ws)

    def events(self) -> Iterator[dict[str, Any]]:
        failures = 0
        while not self.closed:
            try:
                ws = self._connect()
            except (ServerUnreachableError, ServiceUnavailableError, RateLimitedError) as exc:
                if self.closed:
                    return
                if self.opens == 0 or failures >= self.max_reconnects:
                    raise
                failures += 1
                if not self._wait_before_retry(failures, exc):
                    return
                continue
            dropped: Exception = _Dropped("the socket ended")
            try:
                with ws:  # websockets 17 warns when a connection is used outside a `with`
                    if self.closed:  # closed while the handshake ran: `close()` missed this socket
                        return
                    if self.on_open is not None:
                        self.on_open()
                    for payload in self._read(ws):
                        failures = 0  # any message, a ping included: the server is there
                        if payload is not None:
                            yield payload
            except _Dropped as exc:
                dropped = exc
            finally:
                with self._lock:
                    self._ws = None
            if self.closed:
                return
            if failures >= self.max_reconnects:
                raise ServerUnreachableError(
                    f"Lost {self.url} and could not reconnect after {failures} tries"
                ) from dropped
            failures += 1
            if not self._wait_before_retry(failures, dropped):
                return

    def _wait_before_retry(self, failures: int, exc: Exception) -> bool:
        """Back off; False when closed meanwhile."""
        delay = min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)
        if isinstance(exc, RateLimitedError):
            # The server may still count the dropped socket against this key's cap.
            delay = max(delay, min(float(exc.retry_after), MAX_BACKOFF))
        self.reconnects += 1
        if self.on_reconnect is not None:
            self.on_reconnect(failures, exc)
        return not self._closed.wait(delay)

    def _connect(self) -> ClientConnection:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        headers = {"User-Agent": "fetchml-client"}
        if self._key:
            headers["X-API-Key"] = self._key
        try:
            ws = connect(
                self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                close_timeout=CLOSE_TIMEOUT,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            r = exc.response
            resp = httpx.Response(
                r.status_code,
                headers=list(r.headers.raw_items()),
                content=bytes(r.body or b""),
                request=httpx.Request("GET", self.url),
            )
            _raise_for_envelope(resp)
            raise AssertionError("unreachable") from exc  # _raise_for_envelope always raises
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ServerUnreachableError(f"Cannot open {self.url}: {exc}") from exc
        with self._lock:
            self._ws = ws
        self.opens += 1
        return ws

    def _read(self, ws: ClientConnection) -> Iterator[dict[str, Any] | None]:
        """Each event's payload; None for a message that carries none."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                raw = ws.recv(timeout=self.read_timeout)
            except TimeoutError as exc:
                raise _Dropped(f"no message for {self.read_timeout:g}s") from exc
            except ConnectionClosed as exc:
                raise _Dropped(f"the server closed the socket ({exc})") from exc
            except (OSError, RuntimeError) as exc:  # closed under us by another thread
                raise _Dropped(str(exc)) from exc
            try:
                message = json.loads(raw)
            except ValueError as exc:
                raise UnexpectedResponseError(f"{self.url}: a message that is not JSON") from exc
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "ping":
                try:
                    ws.send('{"type":"pong"}')
                    self.pongs += 1
                except (ConnectionClosed, OSError, RuntimeError) as exc:
                    raise _Dropped(str(exc)) from exc
                yield None
            elif kind == "task_update":
                event = message.get("event")
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    raise UnexpectedResponseError(f"{self.url}: a task_update without an event")
                yield event
            elif kind == "resync":
                raise _Dropped("the socket fell behind the feed")
            else:
                # task_complete repeats the terminal task_update just before it; pong, subscribed
                # and error answer messages this reader never sends.
                yield None

    @staticmethod
    def _close_quietly(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):  # already closing or broken: it is gone either way
            ws.close()
