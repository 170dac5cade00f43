"""`fetchml tui`: the Textual dashboard of live scheduler state.

Threads do the I/O (fetchml/tui/feed.py) and only post messages; everything below runs on the
app's thread: it applies what arrives to the view state (fetchml/tui/state.py) and repaints the
panes that changed. Each thread is started by an async Textual worker that awaits it, so the
app's workers cancel and stop it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Header, Log, Static, TabbedContent, TabPane

from fetchml.tui import feed as io
from fetchml.tui.plugins import POLL_EVERY, PluginReport, PluginsPoll, PluginsView
from fetchml.tui.screens import Ask, Confirm, Help, check_priority
from fetchml.tui.services import ServiceList, ServicesPane, ServicesPoll, ServicesView, stop_question
from fetchml.tui.state import (
    ADMIN,
    ENDED,
    QUEUE,
    QUEUE_SORTS,
    RESERVATIONS,
    RUNNING,
    RUNNING_SORTS,
    STATUS,
    TERMINAL,
    USER,
    WORKER_SORTS,
    WORKERS,
    Changes,
    TaskFilter,
    TaskView,
    Viewer,
    ViewState,
)
from fetchml.tui.widgets import Cell, Column, RowTable, StableFooter, TextPane, fmt_age

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient

T = TypeVar("T")

TABS = ("queue", "running", "workers", "reservations", "audit", "ended", "services")
TASK_TABS = {"queue": QUEUE, "running": RUNNING, "ended": ENDED}
LAST_LINE_FOLLOWS = 8  # running tasks whose log is followed for the Running pane's last line
DETAIL_TAIL = 200  # log lines the detail pane starts with
AUDIT_ROWS = 200
REPAINT_EVERY = 0.03  # seconds: events that arrive within this share one repaint

STATUS_STYLES = {
    "queued": "yellow",
    "preparing": "cyan",
    "running": "bold blue",
    "collecting": "cyan",
    "completed": "green",
    "failed": "red",
    "active": "green",
    "draining": "yellow",
    "offline": "red",
    "expired": "dim",
    "claimed": "cyan",
}

# A worker's heartbeat column once it is offline: why.
OFFLINE_WHY = {"heartbeat_lost": "lost", "offline": "stopped"}

QUEUE_COLUMNS = [
    Column("#", 5, right=True),
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("PRIO", 8, right=True),
    Column("GPUS", 5, right=True),
    Column("AGE", 7, right=True),
    Column("PENDING REASON", 20),
]
RUNNING_COLUMNS = [
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("STATUS", 10),
    Column("WORKER", 12),
    Column("GPUS", 10),
    Column("ELAPSED", 8, right=True),
    Column("LAST LOG LINE", 20),
]
ENDED_COLUMNS = [
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("STATUS", 10),
    Column("EXIT", 5, right=True),
    Column("ENDED", 9),
    Column("ERROR", 20),
]
WORKER_COLUMNS = [
    Column("WORKER", 14),
    Column("STATUS", 9),
    Column("SLOTS", 6, right=True),
    Column("HEARTBEAT", 10, right=True),
    Column("DRAIN", 9),
    Column("GPUS (index:task)", 30),
]
RESERVATION_COLUMNS = [
    Column("RESERVATION", 16),
    Column("USER", 10),
    Column("STATUS", 8),
    Column("GPUS", 5, right=True),
    Column("TYPE", 8),
    Column("NODES", 5, right=True),
    Column("EXPIRES IN", 11, right=True),
    Column("HELD", 20),
]
AUDIT_COLUMNS = [
    Column("SEQ", 7, right=True),
    Column("TIME", 9),
    Column("EVENT", 18),
    Column("USER", 10),
    Column("OK", 3),
    Column("RESOURCE / ACTION", 30),
]


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


def _clock_text(ts: float | None, tz: tzinfo | None = None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S")


def _short(value: Any, width: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


class FetchmlTui(App[None]):
    """`client`: where to read from (None: show `state` as given, with no I/O; for screenshots
    and tests of the panes)."""

    TITLE = "fetchml"
    CSS = """
    #main { height: 1fr; }
    #tabs { height: 3fr; }
    #detail { height: 2fr; min-height: 8; border-top: solid $primary; }
    #detail-body { width: 1fr; }
    #log { width: 1fr; border-left: solid $primary-darken-2; }
    #chain { height: auto; padding: 0 1; }
    #statusbar { height: 1; padding: 0 1; background: $panel; }
    #statusbar.reconnecting { background: $warning 40%; }
    #statusbar.down { background: $error 40%; }
    TabPane { padding: 0; }
    """

    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("p", "priority", "Priority"),
        Binding("d", "drain", "Drain"),
        Binding("l", "follow_logs", "Logs"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("D", "download", "Download", show=False),
        Binding("v", "verify", "Verify", show=False),
        Binding("r", "reload", "Reload", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        *[Binding(str(i + 1), f"tab('{tab}')", tab.title(), show=False) for i, tab in enumerate(TABS)],
    ]

    def __init__(
        self,
        client: FetchmlClient | None,
        *,
        state: ViewState | None = None,
        clock: Callable[[], float] = time.time,
        download_dir: Path | None = None,
        backoff: float = 0.2,
        tz: tzinfo | None = None,
        services: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        # Sliding tab underlines and smooth scrolls repaint for ~0.3 s after a key: on a big
        # cluster that is CPU the live updates need. Everything moves at once instead.
        self.animation_level = "none"
        self.client = client
        self.clock = clock
        self.state = state or ViewState(Viewer(ADMIN), clock=clock)
        self.download_dir = download_dir or Path("fetchml-runs")
        self.backoff = backoff
        self.tz = tz  # times shown in it (None: local time)
        self.role: str | None = None if client is not None else self.state.viewer.role
        self.link = io.Link("connecting" if client is not None else "up")
        self.filter = TaskFilter()
        self.sorts = {"queue": QUEUE_SORTS[0], "running": RUNNING_SORTS[0], "workers": WORKER_SORTS[0]}
        self.detail_id: str | None = None
        self.follow_id: str | None = None  # the task whose log the detail pane follows
        self.log_lines: dict[str, list[str]] = {}
        self.artifacts: dict[str, list[dict[str, Any]]] = {}
        self.audit_rows: list[dict[str, Any]] = []
        self.audit_by_seq: dict[str, dict[str, Any]] = {}
        self.chain = ""
        self.failures: list[io.Failure] = []  # every error shown, for tests and the status bar
        self._feed: io.SchedulerFeed | io.UserFeed | None = None
        # Jupyter services, polled (no stream carries them); offline: as given.
        self.services = ServicesView(services if services is not None or client is not None else [])
        self._services_poll: ServicesPoll | None = None
        self.plugins, self.plugins_every = PluginsView(), POLL_EVERY  # status bar: plugin health
        self._plugins_poll: PluginsPoll | None = None
        self._logs: dict[str, io.LogFeed] = {}
        self._logs_done: set[str] = set()
        self._dirty: set[str] = set()
        self._dirty_tasks: set[str] = set()
        self._flush_pending = False
        self._hint_shown = False

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        s = self.state
        yield Header()
        with Vertical(id="main"):
            with TabbedContent(initial="queue", id="tabs"):
                with TabPane("Queue", id="queue"):
                    yield RowTable(QUEUE_COLUMNS, lambda: s.queue_ids(self.filter, self.sorts["queue"]),
                                   self._queue_cells, empty="the queue is empty", id="queue-table")  # fmt: skip
                with TabPane("Running", id="running"):
                    yield RowTable(RUNNING_COLUMNS, lambda: s.running_ids(self.filter, self.sorts["running"]),
                                   self._running_cells, empty="nothing is running", id="running-table")  # fmt: skip
                with TabPane("Workers", id="workers"):
                    yield RowTable(WORKER_COLUMNS, lambda: s.worker_ids(self.sorts["workers"]),
                                   self._worker_cells, empty=self._admin_empty("no workers"), id="workers-table")  # fmt: skip
                with TabPane("Reservations", id="reservations"):
                    yield RowTable(RESERVATION_COLUMNS, s.reservation_ids, self._reservation_cells,
                                   empty=self._admin_empty("no reservations"), id="reservations-table")  # fmt: skip
                with TabPane("Audit", id="audit"):
                    yield Static(self._admin_empty("press r to read the audit log"), id="chain")
                    yield RowTable(AUDIT_COLUMNS, lambda: [str(e["sequence_num"]) for e in self.audit_rows],
                                   self._audit_cells, empty=self._admin_empty("no audit events read yet"),
                                   id="audit-table")  # fmt: skip
                with TabPane("Ended", id="ended"):
                    yield RowTable(ENDED_COLUMNS, lambda: s.ended_ids(self.filter), self._ended_cells,
                                   empty="no task has ended since the TUI started", id="ended-table")  # fmt: skip
                with TabPane("Services", id="services"):
                    yield ServicesPane(self.services, clock=self.clock, id="services-pane",
                                       server_url=self.client.server_url if self.client else None)  # fmt: skip
            with Horizontal(id="detail"):
                yield TextPane(
                    "Highlight a task: its fields, timeline and artifacts show here.", id="detail-body"
                )
                yield Log(id="log", max_lines=5000, auto_scroll=True)
        yield Static("", id="statusbar")
        yield StableFooter()

    def _admin_empty(self, text: str) -> str:
        if self.role == USER:
            return "admin keys only (a user key gets 403 here)"
        return text

    def on_mount(self) -> None:
        self.sub_title = self.client.server_url if self.client is not None else "offline"
        for table in self.query(RowTable):
            table.reload()
        self._paint_status()
        self.set_interval(1.0, self._tick)
        if self.client is not None:
            self._start_scheduler_feed()
            self._services_poll = ServicesPoll(self.client, self._emit)
            self._run("poll:services", self._services_poll, self._services_poll.run)
            self._plugins_poll = PluginsPoll(self.client, self._emit, every=self.plugins_every)
            self._run("poll:plugins", self._plugins_poll, self._plugins_poll.run)
        self.query_one("#queue-table", RowTable).focus()

    def on_unmount(self) -> None:
        self._stop_all()

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

    # --- what the threads report --------------------------------------------------------------

    def on_feed_message(self, message: FeedMessage) -> None:
        with contextlib.suppress(NoMatches):  # one that arrives while the app shuts down
            self._on_item(message.item)

    def _on_item(self, item: object) -> None:
        if isinstance(item, io.Event):
            ch = self.state.apply(item.name, item.data, item.id)
            if item.name == "snapshot" and "task" not in item.data:
                self._logs_done.clear()
            self._changed(ch)
        elif isinstance(item, io.Seed):
            self._changed(
                self.state.seed(
                    queued=item.queued, active=item.active, reservations=item.reservations,
                    live=item.live, replace=item.replace,
                )
            )  # fmt: skip
            if self.role == USER:
                self._mark_own_live()
        elif isinstance(item, io.LogLines):
            self._on_log_lines(item)
        elif isinstance(item, io.Link):
            self._on_link(item)
        elif isinstance(item, io.Role):
            self._on_role(item.role)
        elif isinstance(item, io.Failure):
            self._fail(item)
        elif isinstance(item, ServiceList):
            self.query_one("#services-pane", ServicesPane).show(item.services)
        elif isinstance(item, PluginReport) and self.plugins.load(item):
            self._paint_status()

    def _on_role(self, role: str) -> None:
        if role == self.role:
            return
        self.role = role
        self.state.viewer = Viewer(role, self.state.viewer.user_id)
        self.refresh_bindings()
        for tid in ("workers-table", "reservations-table", "audit-table"):
            self.query_one(f"#{tid}", RowTable).empty = self._admin_empty("-")
        self.query_one("#chain", Static).update(self._admin_empty(""))
        if role == USER and self.client is not None:
            self._start_user_feed()
        self._paint_status()

    def _on_link(self, link: io.Link) -> None:
        previous = self.link
        self.link = link
        if link.state == "down" and link.detail and not self._hint_shown:
            self._hint_shown = True
            self.notify(link.detail, title="No server", severity="warning", timeout=10)
        if link.state == "up" and previous.state != "up":
            self._hint_shown = False
        self._paint_status()

    def _on_log_lines(self, item: io.LogLines) -> None:
        if item.lines:
            self._changed(self.state.set_last_log(item.task_id, item.lines[-1]))
        if item.task_id not in (self.follow_id, self.detail_id) and not item.reset:
            return
        lines = self.log_lines.setdefault(item.task_id, [])
        if item.reset:
            lines.clear()
        lines.extend(item.lines)
        del lines[: -DETAIL_TAIL * 10]
        if item.task_id == self.detail_id:
            log = self.query_one("#log", Log)
            if item.reset:
                log.clear()
            if item.lines:
                log.write_lines(item.lines)
            if item.done:
                self._paint_detail()

    def _fail(self, failure: io.Failure) -> None:
        self.failures.append(failure)
        self.notify(failure.message + (f"\ntrace {failure.trace_id}" if failure.trace_id else ""),
                    title=failure.code, severity="error", timeout=10)  # fmt: skip
        self._paint_status()

    def _changed(self, ch: Changes) -> None:
        """Repaint what changed, once per batch of messages."""
        if not ch:
            return
        self._dirty |= ch.panes
        self._dirty_tasks |= ch.tasks
        if not self._flush_pending:
            # Events come in bursts (a commit's events, a replay): repaint once per frame or so.
            self._flush_pending = True
            self.set_timer(REPAINT_EVERY, self._repaint_dirty)

    def _repaint_dirty(self) -> None:
        with contextlib.suppress(NoMatches):  # a timer that fires while the app shuts down
            self._repaint()

    def _repaint(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        tasks, self._dirty_tasks = self._dirty_tasks, set()
        tables = {QUEUE: "queue-table", RUNNING: "running-table", WORKERS: "workers-table",
                  RESERVATIONS: "reservations-table", ENDED: "ended-table"}  # fmt: skip
        for pane, table_id in tables.items():
            if pane in dirty:
                self.query_one(f"#{table_id}", RowTable).reload()
        if RUNNING in dirty:
            self._sync_log_follows()
        if dirty & {STATUS, QUEUE, RUNNING, WORKERS, RESERVATIONS}:
            self._paint_status()
        if self.detail_id is not None and self.detail_id in tasks:
            self._paint_detail()  # (its place in the queue is repainted by the clock tick)

    def _tick(self) -> None:
        """Ages and elapsed times move: repaint (no I/O)."""
        with contextlib.suppress(NoMatches):
            for tab in ("queue", "running", "workers", "reservations", "services"):
                self.query_one(f"#{tab}-table", RowTable).refresh()
            if self.detail_id is not None:
                self._paint_detail()

    # --- cells --------------------------------------------------------------------------------

    def _queue_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        pos = self.state.queue.position(tid)
        aged = self.state.aged(t, self.clock())
        prio = f"{t.priority}" if aged < t.priority + 0.05 else f"{t.priority}→{aged:.1f}"
        return [
            "-" if pos is None else str(pos + 1), tid[:8], t.job_name, t.user_id, prio,
            str(t.gpu * t.node_count), fmt_age(t.age(self.clock())), t.pending_reason or "",
        ]  # fmt: skip

    def _running_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        workers = ",".join(dict.fromkeys(w for w, _ in t.nodes)) or (t.worker_id or "-")
        gpus = " ".join(",".join(map(str, g)) for _, g in t.nodes if g) or "-"
        status = t.status + ("!" if t.cancel_requested else "")
        return [
            tid[:8], t.job_name, t.user_id, (status, STATUS_STYLES.get(t.status, "")), workers, gpus,
            fmt_age(t.elapsed(self.clock())), t.last_log,
        ]  # fmt: skip

    def _ended_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        cancelled = t.error == "cancelled"
        status = "cancelled" if cancelled else t.status
        return [
            tid[:8], t.job_name, t.user_id, (status, STATUS_STYLES.get(t.status, "")),
            "-" if t.exit_code is None else str(t.exit_code), _clock_text(t.ended_at, self.tz),
            "" if cancelled else (t.error or ""),
        ]  # fmt: skip

    def _worker_cells(self, wid: str) -> list[Cell]:
        w = self.state.workers[wid]
        return [
            w.name, (w.status, STATUS_STYLES.get(w.status, "")),
            f"{w.slots_used}/{w.slots_total}" if w.slots_total else str(w.slots_used),
            fmt_age(w.heartbeat_age(self.clock())) if w.status != "offline" else OFFLINE_WHY.get(w.offline_reason, "-"),
            w.drain or "-", w.gpus_text(),
        ]  # fmt: skip

    def _reservation_cells(self, rid: str) -> list[Cell]:
        r = self.state.reservations[rid]
        left = None if r.expires_at is None else r.expires_at - self.clock()
        held = " ".join(f"{w}:{','.join(map(str, g))}" for w, g in r.gpus.items()) or "-"
        return [
            rid, r.user_id, (r.status, STATUS_STYLES.get(r.status, "")), str(r.gpu_count), r.gpu_type or "any",
            str(r.node_count), fmt_age(left) if left is not None and left > 0 and r.status == "active" else "-", held,
        ]  # fmt: skip

    def _audit_cells(self, seq: str) -> list[Cell]:
        e = self.audit_by_seq[seq]
        when = str(e.get("timestamp", ""))[11:19]
        what = " ".join(str(x) for x in (e.get("resource"), e.get("action"), e.get("error")) if x)
        ok = ("yes", "green") if e.get("success") else ("no", "red")
        return [seq, when, str(e.get("event_type", "")), str(e.get("user_id") or "-"), ok, what]

    # --- status bar and detail ----------------------------------------------------------------

    def _paint_status(self) -> None:
        bar = self.query_one("#statusbar", Static)
        link = self.link
        state = {"up": "● live", "reconnecting": "◌ reconnecting", "down": "✕ no server",
                 "connecting": "… connecting"}.get(link.state, link.state)  # fmt: skip
        who = self.role or "?"
        if self.role == USER:
            who = f"user {self.state.viewer.user_id or ''}".strip() + " · live: your tasks"
        parts = [state, who, self.state.summary()]
        if self.state.last_event_id:
            parts.append(f"event #{self.state.last_event_id}")
        if self.filter:
            parts.append(f"filter: {self.filter.text}")
        if self.state.note:
            parts.append(self.state.note)
        if link.state == "down" and link.detail:
            parts = [state, link.detail]
        line, health = Text("  │  ".join(parts)), self.plugins.text()
        if health:
            line.append("  │  ").append_text(health)
        bar.update(line, layout=False)  # one line, always: no re-layout
        bar.set_class(link.state == "reconnecting", "reconnecting")
        bar.set_class(link.state == "down", "down")

    def _detail_task(self) -> TaskView | None:
        return self.state.tasks.get(self.detail_id) if self.detail_id else None

    def _paint_detail(self) -> None:
        body = self.query_one("#detail-body", TextPane)
        t = self._detail_task()
        if t is None:
            gone = f"Task {self.detail_id} is no longer tracked." if self.detail_id else ""
            body.update(gone or "Highlight a task: its fields, timeline and artifacts show here.")
            return
        now = self.clock()
        out = Text()
        out.append(f"{t.id}\n", "bold")
        out.append(f"{t.job_name}", "bold")
        out.append(f"  {t.user_id}  ")
        out.append(
            t.status + (" (cancel requested)" if t.cancel_requested else ""), STATUS_STYLES.get(t.status, "")
        )
        out.append(f"  priority {t.priority}")
        if t.status == "queued":
            pos = self.state.queue.position(t.id)
            out.append(f"  #{pos + 1} in queue" if pos is not None else "")
        out.append("\n")
        if t.pending_reason and t.status == "queued":
            out.append(f"waiting: {t.pending_reason}\n", "yellow")
        if t.nodes or t.worker_id:
            where = ", ".join(dict.fromkeys(w for w, _ in t.nodes)) or t.worker_id
            gpus = f"  GPUs {t.gpus_text}" if any(g for _, g in t.nodes) else ""
            out.append(f"on {where}{gpus}  elapsed {fmt_age(t.elapsed(now))}\n")
        if t.status in TERMINAL:
            code = "-" if t.exit_code is None else t.exit_code
            out.append(
                f"ended {_clock_text(t.ended_at, self.tz)}  exit {code}  {t.error or ''}\n",
                STATUS_STYLES.get(t.status, ""),
            )
        if not t.live:
            out.append("not live: press r to read again\n" if self.role == USER else "", "dim")
        out.append("\nTimeline\n", "bold underline")
        for step in t.timeline[-16:]:
            where = f" on {step.worker_id}" if step.worker_id else ""
            note = f"  {step.note}" if step.note else ""
            out.append(f"  {_clock_text(step.at, self.tz)}  {step.from_ or 'new'} → {step.to}{where}{note}\n")
        arts = self.artifacts.get(t.id)
        out.append("\nArtifacts", "bold underline")
        if arts is None:
            out.append("  (Enter reads them)\n", "dim")
        else:
            out.append(
                f"  {len(arts)}  (D downloads to {self.download_dir / t.id})\n" if arts else "  none\n"
            )
            for a in arts[:20]:
                out.append(f"  {a.get('path')}  {a.get('size')} B\n")
        if t.fields:
            out.append("\nFields\n", "bold underline")
            for key in sorted(t.fields):
                value = t.fields[key]
                if value in (None, [], {}, ""):
                    continue
                out.append(f"  {key}: ", "bold")
                out.append(_short(value) + "\n")
        following = "following" if self.follow_id == t.id else "l follows it"
        out.append(f"\nLog ({following})", "bold underline")
        body.update(out)

    def _show_detail(self, tid: str | None, *, load: bool = False) -> None:
        changed = tid != self.detail_id
        self.detail_id = tid
        if changed:
            log = self.query_one("#log", Log)
            log.clear()
            if tid is not None and tid in self.log_lines:
                log.write_lines(self.log_lines[tid])
        self._paint_detail()
        if load and tid is not None and self.client is not None:
            c = self.client

            def read() -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
                task = c.tasks.get(tid).model_dump(mode="json", exclude_none=True)
                try:
                    arts: list[dict[str, Any]] | None = [
                        a.model_dump(mode="json") for a in c.artifacts.list(tid)
                    ]
                except Exception:  # someone else's task: its artifacts are not ours to read (403)
                    arts = None
                return task, arts

            def shown(result: tuple[dict[str, Any], list[dict[str, Any]] | None]) -> None:
                task, arts = result
                if arts is not None:
                    self.artifacts[tid] = arts
                self._changed(self.state.set_fields(task))
                self._paint_detail()

            self._call(read, shown)

    # --- panes and selection ------------------------------------------------------------------

    def _tab(self) -> str:
        return str(self.query_one("#tabs", TabbedContent).active or "queue")

    def _table(self, tab: str | None = None) -> RowTable:
        return self.query_one(f"#{tab or self._tab()}-table", RowTable)

    def on_row_table_highlighted(self, message: RowTable.Highlighted) -> None:
        table_id = message.table.id or ""
        if (
            table_id.removesuffix("-table") in TASK_TABS
            and message.row_id is not None
            and message.table.has_focus
        ):
            self._show_detail(message.row_id)

    def on_row_table_chosen(self, message: RowTable.Chosen) -> None:
        table_id = message.table.id or ""
        if table_id.removesuffix("-table") in TASK_TABS:
            self._show_detail(message.row_id, load=True)
        elif table_id == "workers-table":
            self.filter = TaskFilter()
            self.sorts["running"] = "worker"
            self.action_tab("running")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = str(event.pane.id or "")
        table = self.query_one(f"#{tab}-table", RowTable)
        table.reload()
        table.focus()
        if tab == "audit" and not self.audit_rows and self.role == ADMIN:
            self.action_reload_audit()
        if tab == "services" and self._services_poll is not None:
            self._services_poll.poke()

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def _selected_task(self) -> TaskView | None:
        tab = self._tab()
        if tab in TASK_TABS:
            tid = self._table(tab).selected_id
            if tid is not None and tid in self.state.tasks:
                return self.state.tasks[tid]
        return self._detail_task()

    # --- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("drain", "verify"):
            return self.role == ADMIN  # hidden, and refused, for a user key
        return True

    def action_cancel(self) -> None:
        if self._tab() == "services":
            self._stop_service()
            return
        t = self._selected_task()
        if t is None:
            self.notify("Highlight a task to cancel first.", severity="warning")
            return
        if t.status in TERMINAL:
            self.notify(f"Task {t.id[:8]} has already ended ({t.status}).", severity="warning")
            return
        if self.client is None:
            return
        c, tid = self.client, t.id

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(lambda: c.tasks.cancel(tid), lambda _: self._after_write(tid, "cancel sent"))

        self.push_screen(Confirm(f"Cancel task {tid} ({t.job_name}, {t.status}, {t.user_id})?"), answered)

    def _stop_service(self) -> None:
        s = self.query_one("#services-pane", ServicesPane).selected()
        if s is None:
            self.notify("Highlight a service to stop first.", severity="warning")
            return
        question, may = stop_question(s)
        if not may:
            self.notify(question, severity="warning")
            return
        if self.client is None:
            return
        c, sid, poll = self.client, str(s["id"]), self._services_poll

        def stopped(_: None) -> None:
            self.notify(f"stop sent: {sid[:8]}", timeout=4)
            if poll is not None:
                poll.poke()

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(lambda: c.jupyter.stop(sid), stopped)

        self.push_screen(Confirm(question), answered)

    def _after_write(self, tid: str, what: str) -> None:
        """The change comes back as an event when the task is live; a user key's other tasks
        are read again."""
        self.notify(f"{what}: {tid[:8]}", timeout=4)
        t = self.state.tasks.get(tid)
        if self.client is not None and (t is None or not t.live):
            c = self.client
            self._call(lambda: c.tasks.get(tid).model_dump(mode="json", exclude_none=True),
                       lambda task: self._changed(self.state.set_fields(task)))  # fmt: skip

    def action_priority(self) -> None:
        t = self._selected_task()
        if t is None:
            self.notify("Highlight a task first.", severity="warning")
            return
        if self.client is None:
            return
        c, tid = self.client, t.id

        def answered(value: str | None) -> None:
            if value:

                def done(task: dict[str, Any]) -> None:
                    self._changed(self.state.set_fields(task))
                    self.notify(f"priority {value}: {tid[:8]}", timeout=4)

                self._call(
                    lambda: c.scheduler.set_priority(tid, int(value)).model_dump(
                        mode="json", exclude_none=True
                    ),
                    done,
                )

        self.push_screen(
            Ask(f"Priority of {tid[:8]} ({t.job_name}), now {t.priority}:", value=str(t.priority),
                hint="1 (lowest) to 10 (highest); Enter sets it, Esc leaves it", check=check_priority),
            answered,
        )  # fmt: skip

    def action_drain(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        if self._tab() != "workers":
            self.action_tab("workers")
            self.notify("Highlight the worker to drain, then press d.", timeout=4)
            return
        wid = self._table("workers").selected_id
        if wid is None:
            return
        c = self.client

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(
                    lambda: c.scheduler.drain(wid), lambda _: self.notify(f"draining {wid}", timeout=4)
                )

        self.push_screen(Confirm(f"Drain worker {wid}? It takes no new task; running ones finish."), answered)

    def action_follow_logs(self) -> None:
        t = self._selected_task()
        if t is None:
            return
        if self.follow_id == t.id:
            self.follow_id = None
        else:
            self.follow_id = t.id
            self._logs_done.discard(t.id)
            self._show_detail(t.id, load=t.id not in self.artifacts)
        self._sync_log_follows()
        self._paint_detail()

    def action_filter(self) -> None:
        def answered(value: str | None) -> None:
            if value is None:
                return
            self.filter = TaskFilter.parse(value)
            for tab in TASK_TABS:
                self._table(tab).reload()
            self._paint_status()

        self.push_screen(
            Ask("Filter tasks:", value=self.filter.text, placeholder="user:alice status:running name:train",
                hint="empty shows everything"),
            answered,
        )  # fmt: skip

    def action_sort(self) -> None:
        tab = self._tab()
        modes = {"queue": QUEUE_SORTS, "running": RUNNING_SORTS, "workers": WORKER_SORTS}.get(tab)
        if modes is None:
            return
        self.sorts[tab] = modes[(modes.index(self.sorts[tab]) + 1) % len(modes)]
        self._table(tab).reload()
        self.notify(f"{tab} sorted by {self.sorts[tab]}", timeout=2)

    def action_download(self) -> None:
        t = self._selected_task()
        if t is None or self.client is None:
            return
        c, tid, dest = self.client, t.id, self.download_dir / t.id

        def fetch() -> tuple[int, Path]:
            # The client's download checks every path (the server's list may hold one another
            # user or a task chose) and every file's sha256, and takes one attempt only.
            got = c.artifacts.download_all(tid, dest)
            return len(got.files), dest

        self._call(fetch, lambda r: self.notify(f"{r[0]} artifact(s) of {tid[:8]} in {r[1]}", timeout=6))

    def action_verify(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        c = self.client
        self.query_one("#chain", Static).update("verifying the audit chain…")

        def shown(v: Any) -> None:
            ok = "valid" if v.valid else f"BROKEN at event {v.first_tampered}: {v.reason or ''}"
            self.chain = f"chain {ok}; {v.total_events} events; root {(v.chain_root_hash or '-')[:16]}; verified {v.verified_at:%H:%M:%S}"
            self.query_one("#chain", Static).update(Text(self.chain, "green" if v.valid else "bold red"))
            self.notify(self.chain, severity="information" if v.valid else "error", timeout=6)

        self._call(c.audit.verify, shown)

    def action_reload_audit(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        c = self.client

        def read() -> tuple[list[dict[str, Any]], Any]:
            events = [e.model_dump(mode="json") for e in c.audit.events(limit=AUDIT_ROWS).events]
            return events, c.audit.chain_root()

        def shown(result: tuple[list[dict[str, Any]], Any]) -> None:
            events, root = result
            self.audit_rows = events
            self.audit_by_seq = {str(e["sequence_num"]): e for e in events}
            self.query_one("#audit-table", RowTable).reload()
            head = f"{root.total_events} events; root {root.root_hash[:16]}"
            self.query_one("#chain", Static).update(self.chain or f"{head}  (v verifies the chain)")

        self._call(read, shown)

    def action_reload(self) -> None:
        if self.client is None:
            return
        if self._tab() == "audit":
            self.action_reload_audit()
            return
        if self.role == USER:
            self._start_user_feed()
        else:
            self._start_scheduler_feed(fresh=True)
        self.notify("reading again from the server", timeout=2)

    def action_help(self) -> None:
        self.push_screen(Help())
