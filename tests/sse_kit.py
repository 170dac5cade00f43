"""A Server-Sent Events reader for tests: a real HTTP stream read on a thread, frames parsed
as they arrive, every wait bounded."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.harness import ServerHandle


@dataclass
class Frame:
    event: str | None
    data: dict[str, Any] | None
    id: int | None
    comment: str | None = None


@dataclass
class SseReader:
    server: ServerHandle
    key: str
    path: str
    last_event_id: int | None = None
    frames: queue.Queue[Frame | BaseException | None] = field(default_factory=queue.Queue)
    status: int | None = None
    error_body: dict[str, Any] | None = None
    closed_by_server: bool = False

    def __post_init__(self) -> None:
        self._opened = threading.Event()
        self._client = httpx.Client(
            base_url=self.server.url, timeout=httpx.Timeout(10.0, read=60.0), headers={"X-API-Key": self.key}
        )
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._opened.wait(15), f"no answer from {self.path}"

    def _run(self) -> None:
        headers = {"Last-Event-ID": str(self.last_event_id)} if self.last_event_id is not None else {}
        try:
            with self._client.stream("GET", self.path, headers=headers) as resp:
                self._response = resp
                self.status = resp.status_code
                if resp.status_code != 200:
                    self.error_body = json.loads(resp.read())
                    self._opened.set()
                    return
                self._opened.set()
                event: str | None = None
                data: str | None = None
                eid: int | None = None
                for line in resp.iter_lines():
                    if line.startswith(":"):
                        self.frames.put(Frame(None, None, None, comment=line[1:].strip()))
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line.startswith("id: "):
                        eid = int(line[4:])
                    elif line == "" and (event or data):
                        self.frames.put(Frame(event, json.loads(data) if data else None, eid))
                        event, data, eid = None, None, None
                self.closed_by_server = True
                self.frames.put(None)
        except BaseException as exc:  # the test closed it, or the server went away
            self._opened.set()
            self.frames.put(exc)

    def next(self, timeout: float = 10.0, *, comments: bool = False) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no frame on {self.path} within {timeout}s"
            item = self.frames.get(timeout=left)
            if item is None:
                raise EOFError(f"{self.path}: the server ended the stream")
            if isinstance(item, BaseException):
                raise item
            if item.comment is not None and not comments:
                continue
            return item

    def until(self, pred: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
        """Frames up to and including the first that matches."""
        seen: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next(max(0.01, deadline - time.monotonic()))
            seen.append(frame)
            if pred(frame):
                return seen

    def rest(self, timeout: float = 10.0) -> list[Frame]:
        """Every frame until the server ends the stream."""
        seen: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.next(max(0.01, deadline - time.monotonic())))
            except EOFError:
                return seen

    def close(self) -> None:
        if self._response is not None:
            # Shut the socket down first: a close() alone does not end the reader thread's
            # blocked recv (the kernel keeps the socket while it waits), so the server would not
            # see the disconnect until it next writes.
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._response.close()
        self._client.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
