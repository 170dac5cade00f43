"""What the dashboard holds: the view state, the feeds and polls, what is selected, followed
and waiting for a repaint. Its constructor is `FetchmlTui`'s (fetchml/tui/app.py); the layers
above it (panes, threads, updates, actions) only read and change these attributes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App

from fetchml.tui import feed as io
from fetchml.tui.plugins import POLL_EVERY, PluginsPoll, PluginsView
from fetchml.tui.services import ServicesPoll, ServicesView
from fetchml.tui.state import ADMIN, QUEUE_SORTS, RUNNING_SORTS, WORKER_SORTS, TaskFilter, Viewer, ViewState

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient


class AppBase(App[None]):
    """`client`: where to read from (None: show `state` as given, with no I/O; for screenshots
    and tests of the panes)."""

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
