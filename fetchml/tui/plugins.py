"""Tracking-plugin health in the TUI's status bar: `mlflow ● healthy  wandb ● unhealthy`.

No event stream carries plugin health, so a thread (`PluginsPoll`, started by the app like its
other feeds) reads `GET /v1/plugins` at start and every POLL_EVERY seconds and posts a
`PluginReport`; the app hands it to `PluginsView` (plain Python) on its own thread and repaints
the status bar when what it shows changed. A failed read never becomes a notification: the
connection's state is the scheduler feed's to report, and an older server without plugins
(404) just has none to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from fetchml.core.errors import ForbiddenError, NotFoundError, UnauthorizedError
from fetchml.tui.feed import Emit, Poll

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient

POLL_EVERY = 10.0  # seconds between reads: health moves slowly (sidecars are probed every 2 s)
STYLES = {"healthy": "green", "starting": "yellow", "unhealthy": "red", "stopped": "red"}
UNKNOWN = "unknown"  # no health check ran yet on the server (status None)


@dataclass(frozen=True)
class PluginHealth:
    name: str
    status: str | None  # healthy, unhealthy, starting, stopped; None: not checked yet


@dataclass(frozen=True)
class PluginReport:
    """One read of the list: the enabled plugins' health, in the server's order; None: the read
    failed (what was shown is kept, marked stale)."""

    plugins: tuple[PluginHealth, ...] | None


def read_plugins(c: FetchmlClient) -> tuple[PluginHealth, ...]:
    return tuple(PluginHealth(p.name, p.status.status) for p in c.plugins.list() if p.enabled)


class PluginsView:
    """What the status bar shows of the plugins: the last good read, and whether a later read
    failed since (stale)."""

    def __init__(self, plugins: tuple[PluginHealth, ...] = ()) -> None:
        self.plugins = plugins
        self.stale = False
        self.read = False  # a read came in at least once, good or not

    def load(self, report: PluginReport) -> bool:
        """Take a read; False when what is shown did not change (no repaint needed)."""
        self.read = True
        if report.plugins is None:
            changed = bool(self.plugins) and not self.stale
            self.stale = True
            return changed
        changed = report.plugins != self.plugins or self.stale
        self.plugins, self.stale = report.plugins, False
        return changed

    def text(self) -> Text:
        """`mlflow ● healthy  tensorboard ● starting`; empty when no plugin is enabled."""
        out = Text()
        for i, p in enumerate(self.plugins):
            if i:
                out.append("  ")
            status = p.status or UNKNOWN
            out.append(f"{p.name} ")
            out.append(f"● {status}", "dim" if self.stale else STYLES.get(status, "dim"))
        if self.plugins and self.stale:
            out.append(" (stale)", "dim")
        return out


class PluginsPoll(Poll):
    """Reads the plugins now, then every `every` seconds (or at once after `poke`), until stopped.
    Nothing it meets is shown as an error (see the module's docstring); only a bad key ends it,
    since the scheduler feed reports that and this key will not do better later."""

    def __init__(self, client: FetchmlClient, emit: Emit, *, every: float = POLL_EVERY) -> None:
        super().__init__(client, emit, every=every)

    def run(self) -> None:
        while not self.stopped:
            try:
                report = PluginReport(read_plugins(self.c))
            except (NotFoundError, ForbiddenError):
                report = PluginReport(())  # a server without plugins: none to show
            except UnauthorizedError:
                return
            except Exception:  # unreachable, a 5xx, a mismatched server: not worth a toast
                report = PluginReport(None)
            if not self.stopped:
                self.emit(report)
            self._pause()
