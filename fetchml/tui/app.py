"""`fetchml tui`: the Textual dashboard of live scheduler state.

Threads do the I/O (fetchml/tui/feed.py) and only post messages; everything below runs on the
app's thread: it applies what arrives to the view state (fetchml/tui/state.py) and repaints the
panes that changed. Each thread is started by an async Textual worker that awaits it, so the
app's workers cancel and stop it on exit.

The app is built in layers, one concept each, every one a subclass of the one before:
`AppBase` (app_base.py: what it holds), `Panes` (panes.py: what the panes show), `Threads`
(threads.py: starting the I/O), `Updates` (updates.py: what the threads report, and repaints),
`Actions` (actions.py: selection and keys), and `FetchmlTui` here: layout, bindings, start and
stop.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Log, Static, TabbedContent, TabPane

from fetchml.tui.actions import Actions
from fetchml.tui.panes import (
    AUDIT_COLUMNS,
    ENDED_COLUMNS,
    QUEUE_COLUMNS,
    RESERVATION_COLUMNS,
    RUNNING_COLUMNS,
    WORKER_COLUMNS,
)
from fetchml.tui.plugins import PluginsPoll
from fetchml.tui.services import ServicesPane, ServicesPoll
from fetchml.tui.threads import FeedMessage, in_thread
from fetchml.tui.widgets import RowTable, StableFooter, TextPane

__all__ = ["TABS", "FeedMessage", "FetchmlTui", "in_thread"]

TABS = ("queue", "running", "workers", "reservations", "audit", "ended", "services")


class FetchmlTui(Actions):
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
