"""What the threads report, applied on the app's thread: events and seeds folded into the
view state, log lines, the link and the key's role; and the repaints that follow, batched."""

from __future__ import annotations

import contextlib

from textual.css.query import NoMatches
from textual.widgets import Log, Static

from fetchml.tui import feed as io
from fetchml.tui.plugins import PluginReport
from fetchml.tui.services import ServiceList, ServicesPane
from fetchml.tui.state import ENDED, QUEUE, RESERVATIONS, RUNNING, STATUS, USER, WORKERS, Changes, Viewer
from fetchml.tui.threads import DETAIL_TAIL, FeedMessage, Threads
from fetchml.tui.widgets import RowTable

REPAINT_EVERY = 0.03  # seconds: events that arrive within this share one repaint


class Updates(Threads):
    """Applies what the threads post, on the app's thread, and batches the repaints."""

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
