"""The app's side of the threads that do the I/O (fetchml/tui/feed.py): each is started by an
async Textual worker that awaits it, so the app's workers cancel and stop it on exit, and what a
thread reads comes back only as a posted `FeedMessage`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from textual.css.query import NoMatches
from textual.message import Message

from fetchml.tui import feed as io
from fetchml.tui.panes import Panes
from fetchml.tui.state import TaskView

T = TypeVar("T")

LAST_LINE_FOLLOWS = 8  # running tasks whose log is followed for the Running pane's last line
DETAIL_TAIL = 200  # log lines the detail pane starts with


class FeedMessage(Message):
    """Something a feed thread read (fetchml/tui/feed.py's Event, Seed, Link, Failure, ...)."""

    def __init__(self, item: object) -> None:
        super().__init__()
        self.item = item


def in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run blocking `fn` on a daemon thread; await its result on the app's loop. Daemon: a
    thread still blocked when the app exits does not hold the process (each is also stopped)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def run() -> None:
        try:
            value, exc = fn(), None
        except BaseException as e:  # handed to the awaiting worker, which reports it
            value, exc = None, e
        with contextlib.suppress(RuntimeError):  # the app's loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, value, exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


class Threads(Panes):
    """Starts and stops the feeds, polls, log followers and short calls, each on a thread."""

    def _stop_all(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        for poll in (self._services_poll, self._plugins_poll):
            if poll is not None:
                poll.stop()
        for f in self._logs.values():
            f.stop()

    # --- threads ------------------------------------------------------------------------------

    def _emit(self, item: object) -> None:
        """Called on feed threads: only posts (post_message is thread-safe)."""
        self.post_message(FeedMessage(item))

    def _run(
        self, name: str, job: io._Stoppable, fn: Callable[[], None], done: Callable[[], None] | None = None
    ) -> None:
        async def body() -> None:
            try:
                await in_thread(fn, name)
            except asyncio.CancelledError:
                job.stop()
                raise
            except Exception as exc:
                self._fail(io.Failure.of(exc))
            if done is not None:
                done()

        self.run_worker(body(), name=name, group=name.split(":")[0], exit_on_error=False)

    def _call(self, fn: Callable[[], T], done: Callable[[T], None] | None = None) -> None:
        """A short request on a thread; `done` runs on the app's thread with its result. A
        server error becomes a notification with its code and trace id."""

        async def body() -> None:
            try:
                result = await in_thread(fn, "fetchml-tui-call")
            except Exception as exc:
                self._fail(io.Failure.of(exc))
                return
            if done is not None:
                with contextlib.suppress(NoMatches):  # the app closed meanwhile
                    done(result)

        self.run_worker(body(), group="calls", exit_on_error=False)

    def _start_scheduler_feed(self, *, fresh: bool = False) -> None:
        assert self.client is not None
        old = self._feed
        if old is not None:
            old.stop()
        feed = io.SchedulerFeed(self.client, self._emit, backoff=self.backoff)
        if not fresh and isinstance(old, io.SchedulerFeed):
            feed.last_event_id = old.last_event_id
        self._feed = feed
        self._run("feed:scheduler", feed, feed.run)

    def _start_user_feed(self) -> None:
        """A user key: its own tasks live over the WebSocket, the lists read at each connect."""
        assert self.client is not None
        if self._feed is not None:
            self._feed.stop()
        feed = io.UserFeed(self.client, self._emit, backoff=self.backoff)
        self._feed = feed
        self._run("feed:user", feed, feed.run)

    def _mark_own_live(self) -> None:
        """A user key's own tasks are kept current by the WebSocket; others' are as of the read."""
        s = self.state
        for tid in (*s.running, *s.queue):
            t = s.tasks.get(tid)
            if t is not None and s.owns(t):
                t.live = True

    def _may_read_logs(self, t: TaskView) -> bool:
        return self.state.viewer.is_admin or self.state.owns(t)

    def _sync_log_follows(self) -> None:
        """Follow the logs the panes show: the detail task's (if `l`), and the last line of the
        first running tasks."""
        if self.client is None:
            return
        s = self.state
        wanted: dict[str, int] = {}
        for tid in s.running_ids(self.filter, self.sorts["running"])[:LAST_LINE_FOLLOWS]:
            t = s.tasks.get(tid)
            if t is not None and self._may_read_logs(t) and tid not in self._logs_done:
                wanted[tid] = 1
        if self.follow_id is not None:
            wanted[self.follow_id] = DETAIL_TAIL
        for tid, feed in list(self._logs.items()):
            if tid not in wanted or wanted[tid] > feed.tail:
                feed.stop()
                del self._logs[tid]
        for tid, tail in wanted.items():
            if tid in self._logs:
                continue
            feed = io.LogFeed(self.client, tid, self._emit, tail=tail)
            self._logs[tid] = feed

            def finished(tid: str = tid, feed: io.LogFeed = feed) -> None:
                if self._logs.get(tid) is feed:
                    del self._logs[tid]
                    if not feed.stopped:
                        self._logs_done.add(tid)

            self._run(f"log:{tid}", feed, feed.run, finished)

    def _fail(self, failure: io.Failure) -> None:
        self.failures.append(failure)
        self.notify(failure.message + (f"\ntrace {failure.trace_id}" if failure.trace_id else ""),
                    title=failure.code, severity="error", timeout=10)  # fmt: skip
        self._paint_status()
