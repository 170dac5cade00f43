"""The TUI's Services pane: Jupyter services, read by polling `client.jupyter.list()`.

No event stream carries services, so a thread (`ServicesPoll`, started by the app like its other
feeds) reads the list every POLL_EVERY seconds and posts it; the app hands it to the pane on its
own thread. `ServicesView` is plain Python (what to show, in which order); `ServicesPane` is the
widget: the table and, under it, the highlighted service's details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from fetchml.client.base import ServerUnreachableError
from fetchml.core.errors import FetchmlError, ForbiddenError, NotFoundError, UnauthorizedError
from fetchml.tui.feed import Emit, Failure, Poll
from fetchml.tui.state import parse_time
from fetchml.tui.widgets import Cell, Column, RowTable, TextPane, fmt_age

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient

POLL_EVERY = 2.0  # seconds between reads of the list
ENDED_SHOWN = 50  # stopped or failed services still listed, newest first
LIVE = ("running", "starting", "stopping")  # listed first, in this order
STYLES = {"starting": "yellow", "running": "green", "stopping": "cyan", "stopped": "dim", "error": "red"}

SERVICE_COLUMNS = [
    Column("SERVICE", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("STATUS", 9),
    Column("WORKER", 12),
    Column("GPUS", 7),
    Column("AGE", 7, right=True),
    Column("URL / WHY", 20),
]


@dataclass(frozen=True)
class ServiceList:
    """One read of the list; `services` None: this server has no Jupyter services (404)."""

    services: list[dict[str, Any]] | None


def read_services(c: FetchmlClient) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", exclude_none=True) for s in c.jupyter.list()]


class ServicesPoll(Poll):
    """Reads the list now, then every `every` seconds (or at once after `poke`), until stopped.

    A server that cannot be reached is the scheduler feed's to report (the status bar), so it
    is retried silently; any other error is shown once, not at every read."""

    def __init__(self, client: FetchmlClient, emit: Emit, *, every: float = POLL_EVERY) -> None:
        super().__init__(client, emit, every=every)

    def run(self) -> None:
        shown: str | None = None  # the code of the error last shown
        while not self.stopped:
            try:
                self.emit(ServiceList(read_services(self.c)))
                shown = None
            except (NotFoundError, ForbiddenError):
                self.emit(ServiceList(None))
                return
            except UnauthorizedError:
                return  # the scheduler feed says so; this key will not do better later
            except ServerUnreachableError:
                pass
            except FetchmlError as exc:
                if exc.code != shown and not self.stopped:
                    shown = exc.code
                    self.emit(Failure.of(exc))
            self._pause()


class ServicesView:
    """The services as last read: live ones first (running, starting, stopping), then the latest
    ended ones; newest first within each."""

    def __init__(self, items: list[dict[str, Any]] | None = None) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self.ids: list[str] = []
        self.available = True
        self.read = items is not None  # a list came in at least once
        if items is not None:
            self.load(items)

    def load(self, items: list[dict[str, Any]] | None) -> bool:
        """Replace what is shown; False when nothing changed (no repaint needed)."""
        self.read = True
        if items is None:
            changed = self.available or bool(self.ids)
            self.available, self.by_id, self.ids = False, {}, []
            return changed
        by_id = {str(s["id"]): s for s in items if s.get("id")}

        def newest(sid: str) -> float:
            return -(parse_time(by_id[sid].get("created_at")) or 0.0)

        live = [i for i in by_id if by_id[i].get("status") in LIVE]
        live.sort(key=lambda i: (LIVE.index(by_id[i]["status"]), newest(i)))
        ended = sorted((i for i in by_id if i not in live), key=newest)[:ENDED_SHOWN]
        ids = live + ended
        changed = ids != self.ids or by_id != self.by_id or not self.available
        self.available, self.by_id, self.ids = True, by_id, ids
        return changed

    def get(self, sid: str | None) -> dict[str, Any] | None:
        return self.by_id.get(sid) if sid else None

    def cells(self, sid: str, now: float) -> list[Cell]:
        s = self.by_id[sid]
        status = str(s.get("status", "?"))
        gpus = ",".join(map(str, s.get("gpus") or [])) or (str(s["gpu"]) if s.get("gpu") else "-")
        created = parse_time(s.get("created_at"))
        end = parse_time(s.get("ended_at")) or now
        note = s.get("url") or s.get("error") or s.get("pending_reason") or s.get("stop_reason") or ""
        return [
            sid[:8], str(s.get("name", "")), str(s.get("user_id", "")), (status, STYLES.get(status, "")),
            str(s.get("worker_id") or "-"), gpus, fmt_age(None if created is None else end - created),
            (str(note), "red" if s.get("error") and not s.get("url") else ""),
        ]  # fmt: skip

    def detail(self, sid: str | None, server_url: str | None) -> Text:
        s = self.get(sid)
        out = Text()
        if s is None:
            out.append("Highlight a service: its details show here. ", "dim")
            out.append("c stops it; `fetchml jupyter open ID` opens it in a browser.", "dim")
            return out
        status = str(s.get("status", "?"))
        out.append(f"{s['id']}  ", "bold")
        out.append(f"{s.get('name', '')}", "bold")
        out.append(f"  {s.get('user_id', '')}  ")
        out.append(status, STYLES.get(status, ""))
        if s.get("worker_id"):
            gpus = ",".join(map(str, s.get("gpus") or []))
            out.append(f"  on {s['worker_id']}" + (f" GPUs {gpus}" if gpus else ""))
        out.append(f"\nimage {s.get('image', '-')}  workspace {s.get('workspace', '-')}")
        idle = s.get("idle_timeout_minutes")
        out.append(f"  idle stop {f'{idle} min' if idle else 'never'}\n")
        if s.get("url"):
            out.append(f"url {s['url']}\n")
        if server_url and s.get("proxy_path") and status == "running":
            out.append(f"proxy {server_url.rstrip('/')}{s['proxy_path']} (with an API key)\n")
        if status == "running":
            # The token stays off this screen (a dashboard is often left open): the CLI prints it.
            out.append(f"fetchml jupyter open {s['id']}", "bold")
            out.append(" opens it here, through the server; `show` prints its token\n")
        if s.get("pending_reason") and status == "starting":
            out.append(f"waiting: {s['pending_reason']}\n", "yellow")
        if s.get("stop_reason"):
            out.append(f"stopped: {s['stop_reason']}\n", "dim")
        if s.get("error"):
            out.append(f"error: {s['error']}\n", "red")
        for line in (s.get("log_tail") or [])[-10:]:
            out.append(f"  {line}\n", "dim")
        return out


class ServicesPane(Vertical):
    """The Services tab's content: the table, and the highlighted service under it."""

    DEFAULT_CSS = """
    ServicesPane { height: 1fr; }
    ServicesPane > RowTable { height: 2fr; }
    ServicesPane > #service-detail { height: 1fr; min-height: 4; border-top: dashed $primary-darken-2; }
    """

    def __init__(
        self,
        view: ServicesView,
        *,
        clock: Callable[[], float],
        server_url: str | None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.view = view
        self.clock = clock
        self.server_url = server_url

    def compose(self) -> ComposeResult:
        yield RowTable(
            SERVICE_COLUMNS, lambda: self.view.ids, lambda sid: self.view.cells(sid, self.clock()),
            empty=self._empty(), id="services-table",
        )  # fmt: skip
        yield TextPane(self.view.detail(None, self.server_url), id="service-detail")

    def _empty(self) -> str:
        if not self.view.available:
            return "this server has no Jupyter services"
        if not self.view.read:
            return "reading the services…"
        return "no Jupyter services (fetchml jupyter start NAME starts one)"

    @property
    def table(self) -> RowTable:
        return self.query_one("#services-table", RowTable)

    def selected(self) -> dict[str, Any] | None:
        return self.view.get(self.table.selected_id)

    def show(self, items: list[dict[str, Any]] | None) -> None:
        if self.view.load(items) or self.table.empty != self._empty():
            self.table.empty = self._empty()
            self.table.reload()
            self.paint_detail()

    def paint_detail(self) -> None:
        self.query_one("#service-detail", TextPane).update(
            self.view.detail(self.table.selected_id, self.server_url)
        )

    def on_row_table_highlighted(self, message: RowTable.Highlighted) -> None:
        if message.table.id == "services-table":
            self.paint_detail()


def stop_question(s: dict[str, Any]) -> tuple[str, bool]:
    """What to ask before stopping `s`, or why not to: (text, may stop)."""
    sid, status = str(s["id"]), str(s.get("status", "?"))
    if status == "stopping":
        return f"Service {sid[:8]} is already stopping.", False
    if status not in ("starting", "running"):
        return f"Service {sid[:8]} has ended ({status}).", False
    where = f" on {s['worker_id']}" if s.get("worker_id") else ""
    return f"Stop Jupyter service {sid} ({s.get('name', '')}, {status}{where}, {s.get('user_id', '')})?", True
