"""The TUI's I/O, as blocking functions for its worker threads. No Textual here: each function
reports through `emit`, which the app turns into a message for its own thread, and never
touches the state or a widget.

- `SchedulerFeed` (admin keys): the scheduler stream; at a (re)connect that brings a snapshot,
  the rest of the state is read once through the client (running tasks, the queue past the
  snapshot's head, reservations). A stream resumed with `Last-Event-ID` reads nothing: the
  server replays what was missed. A user key gets `403` here: `Role(USER)` is emitted and the
  app switches to `UserFeed`.
- `UserFeed` (user keys): the `/ws` WebSocket's events of the user's own tasks, and the lists
  read again at each (re)connect (the WebSocket has no resume).
- `LogFeed`: one task's log, followed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fetchml.client.base import ServerUnreachableError
from fetchml.core.errors import FetchmlError, ForbiddenError, NotFoundError, UnauthorizedError

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient
    from fetchml.client.logs import LogFollow
    from fetchml.client.streams import EventStream
    from fetchml.client.ws import TaskUpdates

ACTIVE_STATUSES = ("preparing", "running", "collecting")
PAGE = 1000  # the most GET /v1/tasks returns at once
MAX_TASKS = 100_000  # a bound on one list read, whatever `total` says
RETRY_MAX = 5.0  # seconds between tries once the stream's own resumes gave up


# --- what the threads report ------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    role: str  # "admin" or "user"


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    id: int | None
    source: str = "scheduler"  # or the task id of a job stream


@dataclass(frozen=True)
class Seed:
    queued: list[dict[str, Any]] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)
    reservations: list[dict[str, Any]] | None = None
    replace: bool = False
    live: bool = True


@dataclass(frozen=True)
class Link:
    """The connection's state, for the status bar: `up`, `reconnecting` or `down`."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class Failure:
    """An error to show as a notification: code, message, trace id (never a traceback)."""

    code: str
    message: str
    trace_id: str | None = None
    fatal: bool = False  # the feed stopped (a bad key): nothing will retry

    @classmethod
    def of(cls, exc: Exception, *, fatal: bool = False) -> Failure:
        if isinstance(exc, FetchmlError):
            return cls(exc.code, exc.message, exc.trace_id, fatal)
        return cls("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}", None, fatal)

    def text(self) -> str:
        trace = f" (trace {self.trace_id})" if self.trace_id else ""
        return f"{self.code}: {self.message}{trace}"


@dataclass(frozen=True)
class LogLines:
    task_id: str
    lines: list[str]
    reset: bool = False  # the first batch: replaces what was shown
    done: bool = False  # the task ended and every line is in


Emit = Callable[[object], None]


def start_hint(url: str) -> str:
    return (
        f"No fetchml server answers at {url}. Start one with `fetchml serve` (or point the TUI at "
        "another with --server / FETCHML_SERVER_URL); retrying meanwhile."
    )


# --- reads ------------------------------------------------------------------------------------


def list_tasks(c: FetchmlClient, status: str, *, limit: int = MAX_TASKS) -> list[dict[str, Any]]:
    """Every task with `status`, page by page (newest first, as the server pages)."""
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    for _ in range(limit // PAGE + 2):
        page = c.tasks.list(status=status, limit=PAGE, offset=offset)
        for t in page.tasks:
            # A task that moved between two pages shows up twice: keep one.
            out.setdefault(t.id, t.model_dump(mode="json", exclude_none=True))
        offset += len(page.tasks)
        if not page.tasks or offset >= page.total or len(out) >= limit:
            break
    return list(out.values())


def load_admin_seed(c: FetchmlClient, snapshot: dict[str, Any]) -> Seed:
    """What the scheduler snapshot leaves out: running tasks, the queue past its head,
    reservations."""
    active = [t for s in ACTIVE_STATUSES for t in list_tasks(c, s)]
    st = snapshot.get("status") or {}
    depth = int(st.get("batch_queue_depth", 0) or 0) + int(st.get("service_queue_depth", 0) or 0)
    head = snapshot.get("queue") or []
    queued = list_tasks(c, "queued") if depth > len(head) else []
    reservations = [r.model_dump(mode="json", exclude_none=True) for r in c.reservations.list()]
    return Seed(queued=queued, active=active, reservations=reservations)


def load_user_seed(c: FetchmlClient) -> Seed:
    """A user key: every task's scheduling view, once (users may list all tasks; events come
    only for their own, through job streams)."""
    queued = list_tasks(c, "queued")
    active = [t for s in ACTIVE_STATUSES for t in list_tasks(c, s)]
    return Seed(queued=queued, active=active, reservations=None, replace=True, live=False)


# --- long-running feeds -----------------------------------------------------------------------


class _Stoppable:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: Any = None  # the EventStream or LogFollow being read
        self._down = False  # a reconnect was reported and no event has come since

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _hold(self, handle: Any) -> None:
        with self._lock:
            self._current = handle
        if self.stopped:
            handle.close()

    def stop(self) -> None:
        """From any thread: the blocked read returns and `run` ends."""
        self._stop.set()
        with self._lock:
            handle = self._current
        if handle is not None:
            handle.close()


class Poll(_Stoppable):
    """A read repeated every `every` seconds, or at once after `poke`, until stopped: the TUI's
    polled panes (Jupyter services, plugin health), which no stream carries."""

    def __init__(self, client: Any, emit: Emit, *, every: float) -> None:
        super().__init__()
        self.c = client
        self.emit = emit
        self.every = every
        self._wake = threading.Event()

    def poke(self) -> None:
        """Read again now, from any thread."""
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def _pause(self) -> None:
        self._wake.wait(self.every)
        self._wake.clear()


class SchedulerFeed(_Stoppable):
    def __init__(self, client: FetchmlClient, emit: Emit, *, backoff: float = 0.2) -> None:
        super().__init__()
        self.c = client
        self.emit = emit
        self.backoff = backoff
        self.last_event_id: int | None = None

    def _reconnecting(self, attempt: int, exc: Exception) -> None:
        self._down = True
        self.emit(Link("reconnecting", f"try {attempt}: {exc}"))

    def run(self) -> None:
        """Until stopped; returns early on a 403 (a user key: `Role(USER)` was emitted) or a
        401 (reported as fatal)."""
        failures = 0
        while not self.stopped:
            stream: EventStream = self.c.streams.scheduler(
                last_event_id=self.last_event_id, on_reconnect=self._reconnecting
            )
            self._hold(stream)
            up = False
            try:
                for ev in stream:
                    if not up:
                        up, failures = True, 0
                        self.emit(Role("admin"))
                        self.emit(Link("up"))
                    self.emit(Event(ev.event, ev.data, ev.id))
                    if ev.event == "snapshot":
                        self.emit(load_admin_seed(self.c, ev.data))
                    elif self._down:
                        self._down = False
                        self.emit(Link("up"))
                return
            except ForbiddenError:
                self.emit(Role("user"))
                return
            except UnauthorizedError as exc:
                self.emit(Failure.of(exc, fatal=True))
                self.emit(Link("down", exc.message))
                return
            except ServerUnreachableError as exc:
                if self.stopped:
                    return
                self.emit(Link("down" if self.last_event_id is None and not up else "reconnecting",
                               start_hint(self.c.server_url) if self.last_event_id is None else str(exc)))  # fmt: skip
            except FetchmlError as exc:
                if self.stopped:
                    return
                self.emit(Failure.of(exc))
                self.emit(Link("reconnecting", exc.message))
            finally:
                if stream.last_event_id is not None:
                    self.last_event_id = stream.last_event_id
                stream.close()
            failures += 1
            if self._stop.wait(min(self.backoff * 2**failures, RETRY_MAX)):
                return


class UserFeed(_Stoppable):
    """A user key: its own tasks' events through the `/ws` WebSocket (every task of the key's
    user, however many, including those submitted later), and the lists read at each (re)connect.

    The WebSocket has no resume, so every handshake, the first included, is followed by one read
    of the queue and the running tasks (`on_open`, on this thread, before that socket's events):
    the read is at least as new as the socket, and what came meanwhile is applied on top (events
    are upserts). Retried until a server answers; a 401 stops it."""

    def __init__(self, client: FetchmlClient, emit: Emit, *, backoff: float = 0.2) -> None:
        super().__init__()
        self.c = client
        self.emit = emit
        self.backoff = backoff
        self.up = False  # a socket opened and its read came in, at least once

    def _opened(self) -> None:
        self.emit(load_user_seed(self.c))
        self.up = True
        self.emit(Link("up"))

    def _reconnecting(self, attempt: int, exc: Exception) -> None:
        self.emit(Link("reconnecting", f"try {attempt}: {exc}"))

    def run(self) -> None:
        failures = 0
        while not self.stopped:
            updates: TaskUpdates = self.c.streams.updates(
                on_open=self._opened, on_reconnect=self._reconnecting, backoff=self.backoff
            )
            self._hold(updates)
            try:
                for payload in updates:
                    failures = 0
                    event_id = payload.get("id")
                    self.emit(Event(str(payload["type"]), payload,
                                    event_id if isinstance(event_id, int) else None, source="ws"))  # fmt: skip
                return
            except (UnauthorizedError, ForbiddenError) as exc:
                self.emit(Failure.of(exc, fatal=True))
                self.emit(Link("down", exc.message))
                return
            except ServerUnreachableError as exc:
                if self.stopped:
                    return
                self.emit(Link("reconnecting" if self.up else "down",
                               str(exc) if self.up else start_hint(self.c.server_url)))  # fmt: skip
            except FetchmlError as exc:
                if self.stopped:
                    return
                self.emit(Failure.of(exc))
                self.emit(Link("reconnecting", exc.message))
            finally:
                updates.close()
            failures += 1
            if self._stop.wait(min(self.backoff * 2**failures, RETRY_MAX)):
                return


class LogFeed(_Stoppable):
    """One task's log: the last `tail` lines, then each new one, until the task has ended."""

    RETRIES = 8

    def __init__(self, client: FetchmlClient, task_id: str, emit: Emit, *, tail: int = 200) -> None:
        super().__init__()
        self.c = client
        self.task_id = task_id
        self.emit = emit
        self.tail = tail

    def run(self) -> None:
        failures = 0
        offset: int | None = None
        while not self.stopped:
            try:
                if offset is None:
                    page = self.c.logs.page(self.task_id, tail=self.tail)
                    self.emit(LogLines(self.task_id, list(page.lines), reset=True))
                    offset = page.next_offset
                    if page.done:
                        self.emit(LogLines(self.task_id, [], done=True))
                        return
                follow: LogFollow = self.c.logs.follower(self.task_id, offset=offset)
                self._hold(follow)
                for line in follow:
                    self.emit(LogLines(self.task_id, [line]))
                    offset += 1
                    failures = 0
                if not self.stopped:
                    self.emit(LogLines(self.task_id, [], done=True))
                return
            except (ForbiddenError, NotFoundError) as exc:
                self.emit(Failure.of(exc))
                return
            except FetchmlError as exc:
                if self.stopped:
                    return
                failures += 1
                if failures > self.RETRIES:
                    self.emit(Failure.of(exc))
                    return
            if self._stop.wait(min(0.2 * 2**failures, RETRY_MAX)):
                return
