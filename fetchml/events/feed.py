"""The in-process fan-out of committed feed events to open streams, in id order, with no gap.

Events reach a server two ways: its own writer hands them over after each commit
(`committed`, from the writer thread), and on PostgreSQL the LISTEN connection reports that
another server committed up to some id (`notified`, from the listener thread). Both land on
the event loop. Ids are dense in commit order across every server, so an id that skips
ahead means another server's events are missing: those are read from the replay window
first (`fetch_after`), and what arrived meanwhile waits behind them.

Each stream holds a `Subscription`: a filter and a buffer the feed appends to; the stream
drains it in batches. One timer asks every subscription for a keep-alive, instead of a timed
wait per stream. A subscription that falls `max_buffer` events behind is cut off (`lost`):
its client reconnects and resumes from the replay window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from fetchml.core.enums import TaskStatus
from fetchml.core.events import TASK_EVENTS, EventType, FeedEvent
from fetchml.events.bus import SERVICES_TOPIC, TASKS_TOPIC, EventBus, task_topic

log = logging.getLogger("fetchml.feed")

FetchAfter = Callable[[int, int], Awaitable[list[FeedEvent]]]
WAKE_ALL = "*"
_FREES_OR_QUEUES = frozenset({TaskStatus.QUEUED.value, TaskStatus.COMPLETED.value, TaskStatus.FAILED.value})
_FREES = frozenset({TaskStatus.COMPLETED.value, TaskStatus.FAILED.value})


class Subscription:
    def __init__(self, feed: EventFeed, accept: Callable[[FeedEvent], bool], max_buffer: int) -> None:
        self._feed = feed
        self.accept = accept
        self.max_buffer = max_buffer
        self.buffer: deque[FeedEvent] = deque()
        self.ready = asyncio.Event()
        self.keepalive_due = False
        self.lost = False  # fell too far behind, or the feed itself lost events: resync

    def push(self, event: FeedEvent) -> None:
        if self.lost or not self.accept(event):
            return
        if len(self.buffer) >= self.max_buffer:
            self.buffer.clear()
            self.lost = True
        else:
            self.buffer.append(event)
        self.ready.set()

    def drop(self) -> None:
        self.lost = True
        self.buffer.clear()
        self.ready.set()

    async def next_batch(self) -> list[FeedEvent]:
        """The events buffered since the last call (waiting for at least one), or [] when a
        keep-alive is due or the subscription was lost."""
        while not self.buffer and not self.keepalive_due and not self.lost:
            self.ready.clear()
            await self.ready.wait()
        self.keepalive_due = False
        batch = list(self.buffer)
        self.buffer.clear()
        return batch

    def close(self) -> None:
        self._feed.unsubscribe(self)


class EventFeed:
    def __init__(
        self,
        bus: EventBus,
        fetch_after: FetchAfter,
        *,
        keepalive_seconds: float = 15.0,
        max_buffer: int = 10_000,
    ) -> None:
        self.bus = bus
        self._fetch_after = fetch_after
        self.keepalive_seconds = keepalive_seconds
        self.max_buffer = max_buffer
        self.last_id = 0
        self._subs: set[Subscription] = set()
        self._held: dict[int, FeedEvent] = {}
        self._target = 0  # the highest id known committed (another server's, say)
        self._catch_up: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Task[None] | None = None
        self.delivered = 0

    # -- life ------------------------------------------------------------------------------

    def start(self, last_id: int) -> None:
        """On the event loop, with the newest id already committed (nothing before is sent)."""
        self._loop = asyncio.get_running_loop()
        self.last_id = max(self.last_id, last_id)
        self._target = max(self._target, self.last_id)
        self._timer = asyncio.create_task(self._keepalives(), name="fetchml-feed-keepalive")

    def close_streams(self) -> None:
        for sub in list(self._subs):
            sub.drop()

    async def stop(self) -> None:
        for task in (self._timer, self._catch_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for sub in list(self._subs):
            sub.drop()

    async def _keepalives(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_seconds)
            for sub in list(self._subs):
                sub.keepalive_due = True
                sub.ready.set()

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, accept: Callable[[FeedEvent], bool]) -> Subscription:
        sub = Subscription(self, accept, self.max_buffer)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # -- intake (other threads) ------------------------------------------------------------

    def committed(self, events: list[FeedEvent], wakes: set[str]) -> None:
        """From the writer thread, after a commit."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(self.ingest, events, wakes)

    def notified(self, last_id: int | None, wakes: Iterable[str]) -> None:
        """From the LISTEN thread: another server (or this one) committed up to `last_id`."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._remote, last_id, set(wakes))

    def reconnected(self) -> None:
        """From the LISTEN thread, after each (re)connect: notices sent while away are gone."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.resync)

    # -- on the loop ---------------------------------------------------------------------------

    def ingest(self, events: list[FeedEvent], wakes: set[str]) -> None:
        self._wake(events, wakes)
        for e in events:
            if e.id > self.last_id:
                self._held[e.id] = e
                self._target = max(self._target, e.id)
        self._drain()

    def _remote(self, last_id: int | None, wakes: set[str]) -> None:
        self._wake((), wakes)  # the notice names what to wake: no need to read the events for that
        if last_id is None or last_id <= self._target:
            return
        if not self._subs and not self._held and (self._catch_up is None or self._catch_up.done()):
            # Nobody here streams: there is nothing to deliver, so nothing to read. Streams that
            # open later start from the database (snapshot or replay), not from this feed's past.
            self.last_id = self._target = last_id
            return
        self._target = last_id
        self._drain()

    def resync(self) -> None:
        """After the LISTEN connection was down: anything may have been missed."""
        self.bus.publish_all()
        self._start_catch_up()

    def _drain(self) -> None:
        while self.last_id + 1 in self._held:
            self._deliver(self._held.pop(self.last_id + 1))
        if self._target > self.last_id:
            self._start_catch_up()

    def _start_catch_up(self) -> None:
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.create_task(self._read_missing(), name="fetchml-feed-catch-up")

    async def _read_missing(self) -> None:
        try:
            for _ in range(10_000):  # bounded: each round moves last_id on or stops
                if self._held and min(self._held) == self.last_id + 1:
                    self._drain()
                    continue
                events = await self._fetch_after(self.last_id, 1000)
                if not events:
                    break
                if events[0].id > self.last_id + 1 and self.last_id > 0:
                    # Pruned out of the window before this server read them: streams resync.
                    log.warning("feed fell behind the replay window (%d -> %d)", self.last_id, events[0].id)
                    for sub in list(self._subs):
                        sub.drop()
                for e in events:
                    if e.id > self.last_id:
                        self._wake((e,), set())
                        self._held.pop(e.id, None)
                        self._deliver(e)
                        self._target = max(self._target, e.id)
                while self.last_id + 1 in self._held:
                    self._deliver(self._held.pop(self.last_id + 1))
                if self.last_id >= self._target:
                    break
        except Exception as exc:  # a database fault: the next notice or commit tries again
            log.warning("feed catch-up failed: %s", exc)
        finally:
            # Held events the catch-up could not bridge to (pruned gap) go out in order anyway.
            if self._held and self.last_id >= self._target:
                for eid in sorted(self._held):
                    self._deliver(self._held.pop(eid))

    def _deliver(self, event: FeedEvent) -> None:
        if event.id <= self.last_id:
            return
        self.last_id = event.id
        self.delivered += 1
        for sub in list(self._subs):
            sub.push(event)

    def _wake(self, events: Iterable[FeedEvent], wakes: set[str]) -> None:
        """What waits in this process (claims, log followers) on what changed."""
        if WAKE_ALL in wakes:
            self.bus.publish_all()
            return
        topics = set(wakes) | wake_topics(events)
        if topics:
            self.bus.publish(*topics)


def wake_topics(events: Iterable[FeedEvent]) -> set[str]:
    """The wake-up topics these events imply: their tasks' followers, and the claimers when
    work was queued or capacity came free. Sent along in NOTIFY, so another server wakes its
    waiters without reading the events."""
    topics: set[str] = set()
    for e in events:
        if e.type in TASK_EVENTS and e.task_id:
            topics.add(task_topic(e.task_id))
        if _frees_or_queues(e):
            topics.add(TASKS_TOPIC)
            if e.type is not EventType.TASK_TRANSITION or e.data.get("to") in _FREES:
                topics.add(SERVICES_TOPIC)  # a queued service may fit now
    return topics


def _frees_or_queues(e: FeedEvent) -> bool:
    if e.type is EventType.TASK_TRANSITION:
        return e.data.get("to") in _FREES_OR_QUEUES
    return e.type in (EventType.WORKER_CONNECTED, EventType.RESERVATION_CHANGED, EventType.PRIORITY_CHANGED)
