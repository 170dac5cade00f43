"""Live streams over the feed: who may open which, how they start, resume and end.

A stream subscribes to the feed first, then reads where to start (a snapshot, or the replay
window after `Last-Event-ID`), and drops live events it has already covered: nothing between
the read and the live events is lost, and nothing is sent twice. The transports (SSE, the
WebSocket) only encode what `Stream.items` yields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from fetchml.core.enums import TERMINAL_STATUSES, Role
from fetchml.core.errors import ForbiddenError, RateLimitedError
from fetchml.core.events import TASK_EVENTS, EventType, FeedEvent, how_it_ended
from fetchml.core.lifecycle import CANCELLED_ERROR
from fetchml.events.feed import EventFeed, Subscription
from fetchml.services.base import read
from fetchml.services.feedlog import events_after, oldest_and_newest
from fetchml.services.principal import Principal
from fetchml.services.scheduler_status import SchedulerService
from fetchml.services.tasks import TaskService
from fetchml.services.workers import WorkerService
from fetchml.store.db import Database

QUEUE_HEAD = 20


@dataclass(frozen=True)
class Snapshot:
    """The state a stream starts from, as of event `last_event_id` (later events follow)."""

    data: dict[str, Any]
    last_event_id: int


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class End:
    """The job stream's last item: how its task ended."""

    data: dict[str, Any]


@dataclass(frozen=True)
class Resync:
    """The stream fell behind the feed: the client should reconnect with its Last-Event-ID."""


StreamItem = FeedEvent | Snapshot | KeepAlive | Resync | End


@dataclass
class Stream:
    sub: Subscription
    start: Callable[[], Any]
    release: Callable[[], None]
    # The job stream ends after its task's last event.
    ends_on_terminal: bool = False
    closed: bool = field(default=False)

    async def batches(self) -> AsyncGenerator[list[StreamItem], None]:
        """What `items` yields, a list at a time: the items that became ready together (the
        start, or the events one wake-up found buffered). A transport writes a list at once:
        with hundreds of streams, one write per event per stream is what the server's time
        goes to (bench/fanout.py)."""
        try:
            first: list[StreamItem] = await self.start()
            cursor = 0
            out: list[StreamItem] = []
            for item in first:
                out.append(item)
                if isinstance(item, End):
                    yield out
                    return
                cursor = item.last_event_id if isinstance(item, Snapshot) else getattr(item, "id", cursor)
            if out:
                yield out
            while True:
                batch = await self.sub.next_batch()
                if self.sub.lost:
                    yield [Resync()]
                    return
                if not batch:
                    yield [KeepAlive()]
                    continue
                out = []
                for event in batch:
                    if event.id <= cursor:
                        continue  # covered by the snapshot or the replay
                    cursor = event.id
                    out.append(event)
                    if self.ends_on_terminal and event.terminal:
                        out.append(End(end_of(event.data)))
                        yield out
                        return
                if out:
                    yield out
        finally:
            self.close()

    async def items(self) -> AsyncIterator[StreamItem]:
        batches = self.batches()
        try:
            async for batch in batches:
                for item in batch:
                    yield item
        finally:
            self.close()
            await batches.aclose()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sub.close()
            self.release()


class StreamLimits:
    """Open streams per API key: beyond the cap, 429."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.open: Counter[str] = Counter()

    def acquire(self, key_id: str) -> Callable[[], None]:
        if self.open[key_id] >= self.per_key:
            raise RateLimitedError(
                f"This key already holds {self.per_key} open streams (the most allowed); close one first",
                retry_after=5,
            )
        self.open[key_id] += 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.open[key_id] -= 1
                if self.open[key_id] <= 0:
                    del self.open[key_id]

        return release


def may_see(principal: Principal, event: FeedEvent) -> bool:
    """A user sees the events of their own tasks and reservations; an admin sees all."""
    return principal.role is Role.ADMIN or (event.user_id is not None and event.user_id == principal.user_id)


class StreamService:
    def __init__(
        self,
        db: Database,
        feed: EventFeed,
        *,
        tasks: TaskService,
        workers: WorkerService,
        scheduler: SchedulerService,
        max_per_key: int,
        replay_window: int,
    ) -> None:
        self.db = db
        self.feed = feed
        self.tasks = tasks
        self.workers = workers
        self.scheduler = scheduler
        self.limits = StreamLimits(max_per_key)
        self.replay_window = replay_window

    def _open(
        self,
        principal: Principal,
        accept: Callable[[FeedEvent], bool],
        start: Callable[[], Any],
        *,
        ends_on_terminal: bool = False,
    ) -> Stream:
        release = self.limits.acquire(principal.key_id)
        return Stream(self.feed.subscribe(accept), start, release, ends_on_terminal)

    async def _replay(self, after: int, task_id: str | None) -> list[FeedEvent] | None:
        """The events after `after` (only this task's, if given), or None when `after` is
        outside the replay window (too old, or newer than anything committed)."""

        def q(session: Session) -> list[FeedEvent] | None:
            oldest, newest = oldest_and_newest(session)
            # The table keeps up to a prune interval more than the window: measure the window
            # from the newest id, so that a replay is never cut short (which would be a gap).
            too_old = newest - after > self.replay_window or (after < oldest - 1 and newest > 0)
            if after > newest or too_old:
                return None
            return events_after(session, after, limit=self.replay_window, task_id=task_id)

        return await read(self.db, q)

    async def _newest_id(self) -> int:
        return await read(self.db, lambda s: oldest_and_newest(s)[1])

    # -- the scheduler stream (admins) ------------------------------------------------------------

    async def open_scheduler(self, principal: Principal, last_event_id: int | None) -> Stream:
        async def start() -> list[StreamItem]:
            if last_event_id is not None:
                replay = await self._replay(last_event_id, None)
                if replay is not None:
                    return list(replay)
            return [await self.scheduler_snapshot(last_event_id)]

        return self._open(principal, lambda e: True, start)

    async def scheduler_snapshot(self, asked: int | None) -> Snapshot:
        last = await self._newest_id()
        status = await self.scheduler.status()
        workers = await self.workers.list()
        head = await self.tasks.queue_head(QUEUE_HEAD)
        data: dict[str, Any] = {
            "status": status.model_dump(mode="json", exclude_none=True),
            "workers": [w.model_dump(mode="json", exclude_none=True) for w in workers],
            "queue": [t.model_dump(mode="json", exclude_none=True) for t in head],
        }
        return Snapshot(_snapshot_head(asked, last) | data, last)

    # -- one task's stream (its owner or an admin) ----------------------------------------------

    async def open_job(self, principal: Principal, task_id: str, last_event_id: int | None) -> Stream:
        await self._check_owner(principal, task_id)

        async def start() -> list[StreamItem]:
            items: list[StreamItem]
            replay = None if last_event_id is None else await self._replay(last_event_id, task_id)
            if replay is not None:
                items = [e for e in replay if e.type in JOB_EVENTS]
                ended = next((e for e in items if isinstance(e, FeedEvent) and e.terminal), None)
                if ended is not None:
                    return [*items[: items.index(ended) + 1], End(end_of(ended.data))]
                task = await self.tasks.get(task_id, viewer=principal)
                if task.status.value in TERMINAL:  # its last event was already sent
                    return [*items, End(end_of(_task_end(task.model_dump(mode="json"))))]
                return items
            snap = await self.job_snapshot(principal, task_id, last_event_id)
            if snap.data["terminal"]:
                return [snap, End(end_of(_task_end(snap.data["task"])))]
            return [snap]

        return self._open(
            principal, lambda e: e.task_id == task_id and e.type in JOB_EVENTS, start, ends_on_terminal=True
        )

    async def _check_owner(self, principal: Principal, task_id: str) -> None:
        task = await self.tasks.get(task_id, viewer=principal)  # 404 for an unknown id
        if principal.role is not Role.ADMIN and task.user_id != principal.user_id:
            raise ForbiddenError("Only the task's owner or an admin may stream it")

    async def job_snapshot(self, principal: Principal, task_id: str, asked: int | None) -> Snapshot:
        last = await self._newest_id()
        task = await self.tasks.get(task_id, viewer=principal)
        body = task.model_dump(mode="json", exclude_none=True)
        return Snapshot(
            _snapshot_head(asked, last) | {"task": body, "terminal": task.status.value in TERMINAL},
            last,
        )

    # -- the WebSocket feed (users: their own tasks; admins: all) ---------------------------------

    def open_updates(self, principal: Principal, wanted: Callable[[FeedEvent], bool]) -> Stream:
        async def start() -> list[StreamItem]:
            return []

        def accept(e: FeedEvent) -> bool:
            return e.type in TASK_EVENTS and may_see(principal, e) and wanted(e)

        return self._open(principal, accept, start)


JOB_EVENTS = frozenset({EventType.TASK_TRANSITION, EventType.PRIORITY_CHANGED, EventType.TASK_PLACEMENT})


TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)


def end_of(data: dict[str, Any]) -> dict[str, Any]:
    """The `end` item: the task, its final status, exit code and error, and how it ended."""
    keys = ("task_id", "job_name", "user_id", "exit_code", "error")
    out = {k: data[k] for k in keys if data.get(k) is not None}
    return out | {"status": data.get("to"), "outcome": how_it_ended(data)}


def _task_end(task: dict[str, Any]) -> dict[str, Any]:
    """A task (wire form) in the shape of its terminal transition's payload."""
    out = {k: task.get(k) for k in ("job_name", "user_id", "exit_code", "error")}
    return out | {
        "task_id": task["id"],
        "to": task["status"],
        "cancelled": task.get("error") == CANCELLED_ERROR,
    }


def _snapshot_head(asked: int | None, last: int) -> dict[str, Any]:
    head: dict[str, Any] = {"last_event_id": last, "resumed": False}
    if asked is not None:
        head["reason"] = "outside_replay_window"
    return head
