"""The contract's two Server-Sent Events streams, read over httpx and resumed across drops.

An `EventStream` yields each frame as a `StreamEvent` (its `id:`, `event:` name and parsed JSON
`data:`) and remembers the last id. When the connection drops after the stream has started (a
network error, the server restarting, the server closing it, or a `resync` event saying this
stream fell behind), it reconnects with `Last-Event-ID`, so the server replays what was missed:
no gap and no duplicate (docs/events.md). Refusals before the stream starts (401, 403, 404,
429) raise the same exceptions as every other call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from fetchml.client.base import (
    DomainClient,
    ServerUnreachableError,
    Transport,
    UnexpectedResponseError,
    abort_response,
    segment,
)
from fetchml.core.errors import FetchmlError, RateLimitedError, ServiceUnavailableError

if TYPE_CHECKING:
    from fetchml.client.ws import TaskUpdates

SCHEDULER_STREAM = "/v1/scheduler/status/stream"
# Consecutive failed reconnects (no event received in between) before giving up.
DEFAULT_MAX_RECONNECTS = 8
DEFAULT_BACKOFF = 0.2  # seconds before the first reconnect; doubles up to MAX_BACKOFF
MAX_BACKOFF = 2.0
# The server sends a keep-alive comment every 15 s (FETCHML_STREAM_KEEPALIVE_SECONDS): this much
# silence means the connection is dead even if no error says so.
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class StreamEvent:
    """One SSE frame: `event` is its name (`snapshot`, `task_transition`, `end`, ...), `data`
    the decoded JSON, `id` the feed event id (None on frames without one, such as `end`)."""

    event: str
    data: dict[str, Any]
    id: int | None = None


class _Dropped(Exception):
    """The connection ended without the stream's end: reconnect."""


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event name, data, id field or None) per dispatched frame, as the SSE spec reads them:
    comments and `retry:` are skipped, several `data:` lines are joined by newlines, a frame
    with no data is not dispatched."""
    name = ""
    data: list[str] = []
    frame_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                yield name or "message", "\n".join(data), frame_id
            name, data, frame_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            frame_id = value


class EventStream:
    """Iterate it for events; `last_event_id` is the id of the last event received.

    Iterating ends after the job stream's `end` event (or when `close()` is called, from any
    thread); the scheduler stream never ends by itself. After `max_reconnects` reconnects in a
    row that brought no event, the last error is raised (ServerUnreachableError and the like).
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        *,
        last_event_id: int | None = None,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        backoff: float = DEFAULT_BACKOFF,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_reconnect: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self._t = transport
        self.path = path
        self.last_event_id = last_event_id
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.read_timeout = read_timeout
        self.on_reconnect = on_reconnect
        self.reconnects = 0  # in all, for callers that report it
        self._closed = threading.Event()
        self._response: httpx.Response | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        return self.events()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: the iteration ends quietly (a read blocked on another thread returns)."""
        self._closed.set()
        resp = self._response
        if resp is not None:
            abort_response(resp)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def events(self) -> Iterator[StreamEvent]:
        started = False
        failures = 0
        while not self.closed:
            try:
                with closing(self._connect()) as frames:
                    for ev in frames:
                        started = True
                        failures = 0
                        yield ev
                        if ev.event == "end":
                            return
                raise _Dropped("the server closed the stream")
            except (ServerUnreachableError, ServiceUnavailableError, RateLimitedError, _Dropped) as exc:
                if self.closed:
                    return
                # Refusals and a dead server before the first event are the caller's to see;
                # only a stream that was running is resumed.
                if not started:
                    if isinstance(exc, _Dropped):
                        raise ServerUnreachableError(
                            f"The server at {self._t.base_url} ended {self.path} before its first event"
                        ) from exc
                    raise
                if failures >= self.max_reconnects:
                    if isinstance(exc, _Dropped):
                        raise ServerUnreachableError(
                            f"Lost the stream {self.path} at {self._t.base_url} and could not resume it "
                            f"after {failures} tries"
                        ) from exc
                    raise
                delay = min(self.backoff * (2**failures), MAX_BACKOFF)
                if isinstance(exc, RateLimitedError):
                    # The server may still count the dropped stream against this key's cap.
                    delay = max(delay, min(float(exc.retry_after), MAX_BACKOFF))
                failures += 1
                self.reconnects += 1
                if self.on_reconnect is not None:
                    self.on_reconnect(failures, exc)
                if self._closed.wait(delay):
                    return

    def _connect(self) -> Generator[StreamEvent, None, None]:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        t = self._t.timeout
        timeout = httpx.Timeout(connect=t, read=self.read_timeout, write=t, pool=t)
        try:
            with self._t.stream("GET", self.path, headers=headers, timeout=timeout) as resp:
                self._response = resp
                if self.closed:
                    return
                ctype = resp.headers.get("content-type", "")
                if not ctype.startswith("text/event-stream"):
                    raise UnexpectedResponseError(
                        f"Unexpected response to GET {self.path} (HTTP {resp.status_code}, {ctype or 'no content type'}); "
                        f"is {self._t.base_url} a fetchml server of a matching version?"
                    )
                for name, raw, frame_id in parse_sse(resp.iter_lines()):
                    try:
                        data = json.loads(raw)
                    except ValueError as exc:
                        raise UnexpectedResponseError(
                            f"{self.path}: an event whose data is not JSON"
                        ) from exc
                    if not isinstance(data, dict):
                        raise UnexpectedResponseError(
                            f"{self.path}: an event whose data is not a JSON object"
                        )
                    event_id = _event_id(frame_id)
                    if name == "resync":
                        raise _Dropped("the stream fell behind the feed")
                    if event_id is not None:
                        self.last_event_id = event_id
                    yield StreamEvent(name, data, event_id)
        except (httpx.StreamError, FetchmlError) as exc:
            if self.closed:
                return
            if isinstance(exc, httpx.StreamError):  # closed under us: treat as a drop
                raise _Dropped(str(exc)) from exc
            raise
        finally:
            self._response = None


def _event_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise UnexpectedResponseError(f"an event id that is not an integer: {raw[:40]!r}") from None


class StreamsClient(DomainClient):
    def scheduler(self, *, last_event_id: int | None = None, **options: Any) -> EventStream:
        """GET /v1/scheduler/status/stream (admin keys): a `snapshot`, then every change."""
        return EventStream(self._t, SCHEDULER_STREAM, last_event_id=last_event_id, **options)

    def job(self, task_id: str, *, last_event_id: int | None = None, **options: Any) -> EventStream:
        """GET /v1/scheduler/jobs/{id}/stream (the task's owner or an admin): a `snapshot` of
        the task, its `transition`, `priority_changed` and `task_placement` events, then `end`."""
        path = f"/v1/scheduler/jobs/{segment(task_id)}/stream"
        return EventStream(self._t, path, last_event_id=last_event_id, **options)

    def updates(self, **options: Any) -> TaskUpdates:
        """GET /ws (fetchml/client/ws.py): the key's task events over the WebSocket, with no
        resume; `on_open` runs after each (re)connect so the caller can re-read its state."""
        from fetchml.client.ws import TaskUpdates  # loads websockets only for its users

        return TaskUpdates(self._t, **options)
