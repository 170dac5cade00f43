"""Tracking-plugin health in the TUI's status bar: the view and its text without Textual, the poll
thread against a real server (and against none), and the app with Textual's pilot while an admin
enables, probes and disables a plugin."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from textual.pilot import Pilot

from fetchml.client import FetchmlClient
from fetchml.core.models import PluginConfig
from fetchml.tui.app import FetchmlTui
from fetchml.tui.feed import Failure
from fetchml.tui.plugins import PluginHealth, PluginReport, PluginsPoll, PluginsView
from tests.cli.conftest import unreachable_url
from tests.harness import Keys, ServerHandle
from tests.tui.poll_kit import collect

WANDB = PluginConfig(mode="remote", settings={"api_key": "k", "base_url": "http://127.0.0.1:9/"})


def spans(text: Any) -> list[tuple[str, str]]:
    return [(text.plain[s.start : s.end], str(s.style)) for s in text.spans]


# --- the view ---------------------------------------------------------------------------------


def test_the_text_names_each_enabled_plugin_coloured_by_its_status() -> None:
    view = PluginsView()
    assert view.text().plain == ""  # nothing read yet: nothing shown
    report = PluginReport((PluginHealth("mlflow", "healthy"), PluginHealth("tensorboard", "starting"),
                           PluginHealth("wandb", "unhealthy"), PluginHealth("x", None)))  # fmt: skip
    assert view.load(report) is True
    text = view.text()
    assert text.plain == "mlflow ● healthy  tensorboard ● starting  wandb ● unhealthy  x ● unknown"
    assert spans(text) == [("● healthy", "green"), ("● starting", "yellow"), ("● unhealthy", "red"),
                           ("● unknown", "dim")]  # fmt: skip
    assert view.load(report) is False  # the same read: no repaint
    assert view.load(PluginReport(())) is True and view.text().plain == ""


def test_a_failed_read_keeps_what_was_shown_marked_stale() -> None:
    view = PluginsView()
    assert view.load(PluginReport(None)) is False and view.text().plain == ""  # nothing to mark
    view.load(PluginReport((PluginHealth("mlflow", "healthy"),)))
    assert view.load(PluginReport(None)) is True
    assert view.text().plain == "mlflow ● healthy (stale)"
    assert {style for _, style in spans(view.text())} == {"dim"}
    assert view.load(PluginReport(None)) is False  # still stale: no repaint
    assert view.load(PluginReport((PluginHealth("mlflow", "healthy"),))) is True  # fresh again
    assert not view.stale and view.text().plain == "mlflow ● healthy"


# --- the poll ---------------------------------------------------------------------------------



def test_the_poll_reads_only_the_enabled_plugins(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.client(keys.admin) as admin, shared_server.client(keys.user) as user:
        admin.plugins.configure("wandb", WANDB)
        try:
            assert admin.plugins.health("wandb").status == "unhealthy"  # nothing listens on port 9
            got: list[object] = []
            collect(PluginsPoll(user, got.append, every=0.05), got, 2)  # a user key may read them
        finally:
            admin.plugins.disable("wandb")
    assert len(got) >= 2 and all(isinstance(g, PluginReport) for g in got)
    assert got[0] == PluginReport((PluginHealth("wandb", "unhealthy"),))


def test_an_unreachable_or_older_server_is_no_error(shared_server: ServerHandle, keys: Keys) -> None:
    got: list[object] = []
    with FetchmlClient(unreachable_url(), "fml_x", timeout=1) as c:
        collect(PluginsPoll(c, got.append, every=0.05), got, 2, timeout=5.0)
    assert got and all(g == PluginReport(None) for g in got)  # stale, never a Failure
    # A server without /v1/plugins answers 404 (here: every path under a prefix it lacks).
    got = []
    with FetchmlClient(shared_server.url + "/older", keys.admin, timeout=5) as c:
        collect(PluginsPoll(c, got.append, every=0.05), got, 2)
    assert got and all(g == PluginReport(()) for g in got)
    assert not [g for g in got if isinstance(g, Failure)]


# --- the app ----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_status_bar_shows_a_plugin_once_an_admin_enables_it(
    shared_server: ServerHandle, keys: Keys
) -> None:
    app = FetchmlTui(shared_server.client(keys.admin))
    app.plugins_every = 0.2  # the TUI reads every 10 s; a test needs not wait that long
    admin = shared_server.client(keys.admin)

    def bar() -> str:
        return str(app.query_one("#statusbar").render())

    async def until(pilot: Pilot[Any], cond: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            await pilot.pause(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {bar()!r}")

    async def main() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: app.link.state == "up", "the connection")
            await until(pilot, lambda: app.plugins.read, "the first read of the plugins")
            assert "wandb" not in bar()
            # Off the app's loop: these are blocking requests.
            await asyncio.to_thread(admin.plugins.configure, "wandb", WANDB)
            await asyncio.to_thread(admin.plugins.health, "wandb")
            await until(pilot, lambda: "wandb ● unhealthy" in bar(), "wandb in the status bar")
            [span] = [s for s in app.plugins.text().spans if s.style == "red"]
            assert span.start > 0
            await asyncio.to_thread(admin.plugins.disable, "wandb")
            await until(pilot, lambda: "wandb" not in bar(), "wandb to leave the status bar")
            assert app.failures == []

    try:
        asyncio.run(main())
    finally:
        with admin:
            admin.plugins.disable("wandb")
        if app.client is not None:
            app.client.close()
