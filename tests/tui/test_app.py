"""`fetchml tui` driven with Textual's pilot against a real server and a real `fetchml worker
--executor local`: a task submitted shows in Queue, runs and completes with its log; cancel,
priority and drain from the keyboard; a user key's view; a server restart; no server at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from fetchml.client import FetchmlClient
from fetchml.core.errors import ForbiddenError
from fetchml.core.jupyter import StartJupyterRequest
from fetchml.tui import feed as io
from fetchml.tui.app import FetchmlTui
from fetchml.tui.screens import Ask, Confirm
from fetchml.tui.services import ServicesPane
from fetchml.tui.widgets import RowTable, TextPane
from tests.cli.conftest import unreachable_url
from tests.e2e.conftest import FAST_LEASES, Cluster, gated, local_cluster
from tests.harness import ServerPool

SIZE = (140, 40)


@pytest.fixture(scope="module")
def box(module_server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server and one local-executor worker (one slot) for the module."""
    with local_cluster(module_server_pool, tmp_path_factory.mktemp("tui")) as c:
        yield c


async def until(pilot: Pilot[Any], cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def drive(app: FetchmlTui, scenario: Callable[[Pilot[Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.link.state in ("up", "down"), "the first connection")
            await scenario(pilot)

    try:
        asyncio.run(main())
    finally:
        if app.client is not None:
            app.client.close()


def table(app: FetchmlTui, name: str) -> RowTable:
    return app.query_one(f"#{name}-table", RowTable)


async def select(pilot: Pilot[Any], app: FetchmlTui, tab: str, row_id: str) -> None:
    await pilot.press(
        str(["queue", "running", "workers", "reservations", "audit", "ended", "services"].index(tab) + 1)
    )
    await until(pilot, lambda: table(app, tab).select(row_id), f"{row_id} in {tab}")
    await until(pilot, lambda: table(app, tab).selected_id == row_id, f"{row_id} highlighted")


def no_traceback(app: FetchmlTui) -> None:
    for f in app.failures:
        assert "Traceback" not in f.message, f


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "go"
    yield path
    path.touch()  # never leave the module's worker stuck


# --- admin ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_submitted_task_shows_in_queue_runs_and_completes_with_its_log(box: Cluster, gate: Path) -> None:
    app = FetchmlTui(box.server.client(box.admin))

    async def scenario(pilot: Pilot[Any]) -> None:
        assert app.role == "admin" and app.link.state == "up"
        # The worker's one slot is taken, so the next task waits in the queue.
        blocker = box.submit(entrypoint=gated(gate, "echo blocker done"), job_name="blocker")
        await until(pilot, lambda: blocker in app.state.running, "the blocker to run")
        # It outlasts the worker's running-report window: `running` is a step of its own.
        tid = box.submit(entrypoint="sh -c 'echo first line; echo the end; sleep 0.2'", job_name="tui-e2e")
        await until(pilot, lambda: tid in app.state.queue, "the task in Queue")
        await until(pilot, lambda: tid in table(app, "queue").row_ids, "the task in the Queue table")
        assert app.state.tasks[tid].job_name == "tui-e2e" and app.state.tasks[tid].user_id == "alice"
        w1 = app.state.workers["w1"]
        assert w1.slots_used == 1 and blocker in w1.tasks

        gate.touch()
        await until(pilot, lambda: app.state.tasks.get(tid) and app.state.tasks[tid].status == "completed",
                    "the task to complete")  # fmt: skip
        statuses = [s.to for s in app.state.tasks[tid].timeline]
        assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "completed"
        assert tid not in app.state.running and tid not in app.state.queue

        # Its log, in the detail pane: open it from the Ended pane.
        await select(pilot, app, "ended", tid)
        await pilot.press("enter")
        await pilot.press("l")
        await until(
            pilot, lambda: app.log_lines.get(tid) == ["first line", "the end"], "the log in the detail pane"
        )
        await until(pilot, lambda: app.state.tasks[tid].fields.get("exit_code") == 0, "the task's fields")
        no_traceback(app)

    drive(app, scenario)
    assert app.failures == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_cancel_and_priority_from_the_keyboard(box: Cluster, gate: Path) -> None:
    app = FetchmlTui(box.server.client(box.admin))

    async def scenario(pilot: Pilot[Any]) -> None:
        blocker = box.submit(entrypoint=gated(gate, "echo ok"), job_name="blocker")
        a = box.submit(entrypoint="sh -c 'echo a'", job_name="a")
        b = box.submit(entrypoint="sh -c 'echo b'", job_name="b")
        await until(pilot, lambda: a in app.state.queue and b in app.state.queue, "a and b queued")
        await until(pilot, lambda: blocker in app.state.running, "the blocker to run")
        queue = table(app, "queue")
        assert [i for i in queue.row_ids if i in (a, b)] == [a, b]  # same priority: FIFO

        # p on b, priority 9: b moves ahead of a, in the app as on the server.
        await select(pilot, app, "queue", b)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, Ask), "the priority prompt")
        await pilot.press("backspace", "9", "enter")
        await until(pilot, lambda: [i for i in queue.row_ids if i in (a, b)] == [b, a], "b ahead of a")
        assert app.state.tasks[b].priority == 9 and box.task(b)["priority"] == 9
        assert queue.selected_id == b  # the cursor went with it

        # A bad priority is refused in the prompt; Escape leaves it.
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, Ask), "the priority prompt")
        await pilot.press("backspace", "1", "1", "enter")
        assert isinstance(app.screen, Ask)
        await pilot.press("escape")
        assert box.task(b)["priority"] == 9

        # c on a: asks first; n leaves it, y cancels it.
        await select(pilot, app, "queue", a)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("n")
        assert box.task(a)["status"] == "queued"
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: a in app.state.ended, "a to end")
        assert app.state.tasks[a].error == "cancelled" and box.task(a)["error"] == "cancelled"
        assert a not in queue.row_ids

        # A running task: cancel asks the worker to stop it.
        await select(pilot, app, "running", blocker)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(
            pilot, lambda: app.state.tasks[blocker].status == "failed", "the blocker cancelled", timeout=40
        )
        assert app.state.tasks[blocker].error == "cancelled"
        await until(pilot, lambda: app.state.tasks[b].status == "completed", "b to run after it")

        # A server error is a notification with its code and trace id: cancel an ended task
        # through the same path (the app refuses it itself when it knows; ask the server here).
        app._call(lambda: app.client.tasks.cancel(b) if app.client else None)  # type: ignore[func-returns-value]
        await until(pilot, lambda: app.failures, "the refusal")
        [f] = app.failures
        assert f.code == "CONFLICT" and f.trace_id and "Traceback" not in f.message

    drive(app, scenario)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_drain_a_worker_as_admin(box: Cluster) -> None:
    app = FetchmlTui(box.server.client(box.admin))
    box.start_worker("w-drain", "--executor", "local")

    async def scenario(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: "w-drain" in app.state.workers, "the worker in the Workers pane")
        assert app.check_action("drain", ()) is True
        await select(pilot, app, "workers", "w-drain")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.state.workers["w-drain"].drain in ("draining", "drained"), "the drain")
        # Idle, it finishes at once and goes offline.
        await until(
            pilot, lambda: app.state.workers["w-drain"].status == "offline", "the drained worker offline"
        )
        assert app.state.workers["w-drain"].drain == "drained"
        assert app.state.workers["w1"].status == "active"

    drive(app, scenario)
    assert app.failures == []


# --- a user key -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_user_key_sees_its_tasks_live_and_is_not_offered_drain(box: Cluster, gate: Path) -> None:
    other = box.server.make_key("bob", "user")
    blocker = box.submit(entrypoint=gated(gate, "echo mine; echo done"), job_name="mine")
    with box.server.http(other) as http:
        r = http.post("/v1/tasks", json={"job_name": "bobs", "entrypoint": "sh -c 'echo bob'"})
        assert r.status_code == 201, r.text
        bobs = r.json()["id"]
    box.wait_status(blocker, "running")
    app = FetchmlTui(box.server.client(box.user))

    async def scenario(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.role == "user" and blocker in app.state.running, "the user's view")
        assert app.state.viewer.user_id == "alice"
        assert bobs in app.state.queue  # every user may see the queue (not bob's task contents)
        assert "entrypoint" not in app.state.tasks[bobs].fields
        # Alice's tasks are live (the WebSocket carries them); bob's are as of the read.
        assert app.state.tasks[blocker].live and not app.state.tasks[bobs].live

        # Drain is not offered: not in the footer, and d does nothing.
        assert app.check_action("drain", ()) is False and app.check_action("verify", ()) is False
        await pilot.press("3")
        assert "admin keys only" in table(app, "workers").empty
        await pilot.press("d")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, Confirm)
        footer_keys = {b.binding.action for b in app.active_bindings.values() if b.binding.show and b.enabled}
        assert "drain" not in footer_keys and "cancel" in footer_keys

        # Cancelling bob's task is the server's to refuse: a notification, FORBIDDEN, trace id.
        await select(pilot, app, "queue", bobs)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.failures, "the refusal")
        assert app.failures[-1].code == "FORBIDDEN" and app.failures[-1].trace_id

        # Alice's task goes on live through its job stream, log included.
        gate.touch()
        await until(pilot, lambda: app.state.tasks[blocker].status == "completed", "alice's task to complete")
        await select(pilot, app, "ended", blocker)
        await pilot.press("enter", "l")
        await until(pilot, lambda: app.log_lines.get(blocker) == ["mine", "done"], "alice's log")

    drive(app, scenario)
    # The server refuses a user's drain too (the TUI never sends one).
    with FetchmlClient(box.server.url, box.user) as c, pytest.raises(ForbiddenError):
        c.scheduler.drain("w1")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_user_keys_new_tasks_show_up_live_over_the_websocket(box: Cluster, gate: Path) -> None:
    blocker = box.submit(entrypoint=gated(gate, "echo hold"), job_name="hold")
    box.wait_status(blocker, "running")  # the one slot is taken: what comes next stays queued
    app = FetchmlTui(box.server.client(box.user))

    async def scenario(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.role == "user" and blocker in app.state.running and app.link.state == "up",
                    "the user's view")  # fmt: skip
        assert isinstance(app._feed, io.UserFeed)
        with box.server.http(box.server.make_key("bob", "user")) as http:
            r = http.post("/v1/tasks", json={"job_name": "bobs-late", "entrypoint": "sh -c 'echo bob'"})
            assert r.status_code == 201, r.text
            bobs = r.json()["id"]
        late = box.submit(entrypoint="sh -c 'echo late'", job_name="late")
        other = box.submit(entrypoint="sh -c 'echo other'", job_name="other")

        # Submitted after the TUI started, in the Queue with no `r`.
        await until(pilot, lambda: late in app.state.queue and other in app.state.queue, "the new tasks")
        t = app.state.tasks[late]
        assert t.live and t.job_name == "late" and t.user_id == "alice", t
        # Only alice's own tasks come over her socket (bob's came first on the feed).
        assert bobs not in app.state.tasks
        await select(pilot, app, "queue", late)

        # Cancelled from the TUI: the cancel comes back as an event (a live task is not read again).
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: late in app.state.ended, "the cancel, live")
        assert app.state.tasks[late].status == "failed" and app.state.tasks[late].error == "cancelled"
        assert late not in app.state.queue
        # Cancelled elsewhere: only the WebSocket can tell the TUI.
        with FetchmlClient(box.server.url, box.user) as c:
            c.tasks.cancel(other)
        await until(pilot, lambda: other in app.state.ended, "the other cancel, live")
        await select(pilot, app, "ended", other)
        assert not [f for f in app.failures if f.fatal]
        assert "live: your tasks" in str(app.query_one("#statusbar").render())
        with box.server.http(box.admin) as http:
            assert http.delete(f"/v1/tasks/{bobs}").status_code == 204

    drive(app, scenario)


# --- Jupyter services -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_service_shows_in_the_services_pane_and_stops_from_the_keyboard(box: Cluster) -> None:
    # A GPU type no worker has: the service stays queued (`starting`), and no Jupyter runs.
    with FetchmlClient(box.server.url, box.user) as c:
        svc = c.jupyter.start(StartJupyterRequest(name="tui-lab", gpu=1, gpu_type="NOSUCHGPU"))
    app = FetchmlTui(box.server.client(box.admin))
    bob = FetchmlTui(box.server.client(box.server.make_key("bob", "user")))

    async def scenario(pilot: Pilot[Any]) -> None:
        await select(pilot, app, "services", svc.id)
        pane = app.query_one("#services-pane", ServicesPane)
        cells = app.services.cells(svc.id, time.time())
        assert cells[:5] == [svc.id[:8], "tui-lab", "alice", ("starting", "yellow"), "-"], cells
        assert (pane.selected() or {}).get("id") == svc.id
        detail = app.query_one("#service-detail", TextPane).plain
        assert svc.id in detail and "waiting:" in detail, detail

        # c asks first; n leaves it, y stops it (a queued service stops at once).
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        assert "Stop Jupyter service" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        with FetchmlClient(box.server.url, box.admin) as c:
            assert c.jupyter.get(svc.id).status.value == "starting"
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: (app.services.get(svc.id) or {}).get("status") == "stopped", "the stop")
        ids = app.services.ids
        assert svc.id in ids and all(
            app.services.by_id[i]["status"] != "stopped" for i in ids[: ids.index(svc.id)]
        )
        # Stopped: c says so instead of asking.
        await pilot.press("c")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, Confirm)

    drive(app, scenario)
    assert app.failures == []
    with FetchmlClient(box.server.url, box.user) as c:
        assert c.jupyter.get(svc.id).status.value == "stopped"

    async def bobs_view(pilot: Pilot[Any]) -> None:
        await pilot.press("7")
        await until(pilot, lambda: bob.services.read, "bob's list")
        assert svc.id not in bob.services.ids  # a user key lists its own services only

    drive(bob, bobs_view)


# --- connections ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_after_a_server_restart_the_tui_reconnects_and_matches_the_server(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = server_factory(**FAST_LEASES)
    c = Cluster(
        server=server,
        tmp=tmp_path,
        admin=server.make_key("root", "admin"),
        user=server.make_key("alice", "user"),
    )
    c.start_worker("w1", "--executor", "local")
    gate = tmp_path / "go"
    try:
        app = FetchmlTui(server.client(c.admin), backoff=0.1)
        seen_states: list[str] = []

        async def scenario(pilot: Pilot[Any]) -> None:
            running = c.submit(entrypoint=gated(gate, "echo survived"), job_name="long")
            await until(pilot, lambda: running in app.state.running, "the task running")
            queued = [c.submit(entrypoint="sh -c 'echo q'", job_name=f"q{i}") for i in range(3)]
            await until(pilot, lambda: all(q in app.state.queue for q in queued), "three queued")
            before = app.state.last_event_id

            server.stop()
            await until(pilot, lambda: app.link.state != "up", "the TUI to notice")
            seen_states.append(app.link.state)
            bar = str(app.query_one("#statusbar").render())
            assert "reconnecting" in bar, bar
            server.start()
            # Changes made while it was away reach it by replay, with no reload.
            late = c.submit(entrypoint="sh -c 'echo late'", job_name="late")
            await until(
                pilot, lambda: app.link.state == "up" and late in app.state.tasks, "the reconnect", timeout=60
            )
            assert (
                app.state.last_event_id is not None
                and before is not None
                and app.state.last_event_id > before
            )

            gate.touch()
            everything = [running, *queued, late]
            await until(pilot, lambda: all(app.state.tasks[t].status == "completed" for t in everything if t in app.state.tasks)
                        and all(t in app.state.tasks for t in everything), "every task to complete", timeout=60)  # fmt: skip
            # The TUI's state matches the server's.
            with server.http(c.admin) as http:
                for t in everything:
                    assert http.get(f"/v1/tasks/{t}").json()["status"] == app.state.tasks[t].status
                assert http.get("/v1/queue").json()["queued"] == len(app.state.queue) == 0
            assert len(app.state.running) == 0
            assert app.state.workers["w1"].status == "active" and app.state.workers["w1"].slots_used == 0

        drive(app, scenario)
        assert seen_states == ["reconnecting"]
        assert not [f for f in app.failures if f.fatal]
    finally:
        gate.touch()
        c.stop()


def test_with_no_server_it_says_how_to_start_one(tmp_path: Path) -> None:
    url = unreachable_url()
    app = FetchmlTui(FetchmlClient(url, "fml_nokey", timeout=2), backoff=0.05)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert app.link.state == "down"
        bar = str(app.query_one("#statusbar").render())
        assert "fetchml serve" in bar and url in bar, bar
        assert app.failures == []  # a missing server is a state, not an error

    drive(app, scenario)


def test_a_bad_key_is_one_notification(box: Cluster) -> None:
    app = FetchmlTui(FetchmlClient(box.server.url, "fml_not_a_key", timeout=5))

    async def scenario(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.failures, "the refusal")
        [f] = app.failures
        assert f.code == "UNAUTHORIZED" and f.fatal and f.trace_id

    drive(app, scenario)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_artifacts_download_and_the_audit_chain(box: Cluster, tmp_path: Path) -> None:
    app = FetchmlTui(box.server.client(box.admin), download_dir=tmp_path / "runs")

    async def scenario(pilot: Pilot[Any]) -> None:
        tid = box.submit(entrypoint="sh -c 'mkdir -p $FETCHML_OUTPUT_DIR/sub && echo 0.93 > $FETCHML_OUTPUT_DIR/sub/acc.txt'",
                         job_name="with-artifacts")  # fmt: skip
        await until(
            pilot, lambda: app.state.tasks.get(tid) and app.state.tasks[tid].status == "completed", "the task"
        )
        await select(pilot, app, "ended", tid)
        await pilot.press("enter")
        await until(pilot, lambda: app.artifacts.get(tid), "its artifacts listed")
        assert [a["path"] for a in app.artifacts[tid]] == ["sub/acc.txt"]
        await pilot.press("D")
        target = tmp_path / "runs" / tid / "sub" / "acc.txt"
        await until(pilot, target.exists, "the download")
        assert target.read_text() == "0.93\n"

        # A path in the list that would climb out of the download folder (a rogue row): refused
        # before anything is fetched, shown as an error, nothing written outside.
        box.server.db_exec(
            "INSERT INTO artifacts (task_id, attempt, path, size, sha256, created_at) "
            "SELECT task_id, attempt, ?, size, sha256, created_at FROM artifacts WHERE task_id = ?",
            ("../../escape.txt", tid),
        )
        await pilot.press("D")
        await until(pilot, lambda: app.failures, "the refusal")
        assert "unsafe artifact path" in app.failures[-1].message
        assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "runs" / "escape.txt").exists()
        app.failures.clear()
        box.server.db_exec("DELETE FROM artifacts WHERE task_id = ? AND path = ?", ("../../escape.txt", tid))

        # Audit: the pane reads the log when opened; v verifies the chain.
        await pilot.press("5")
        await until(pilot, lambda: app.audit_rows, "the audit events")
        assert all("event_type" in e for e in app.audit_rows)
        await pilot.press("v")
        await until(pilot, lambda: app.chain.startswith("chain valid"), "the verification")
        assert "chain valid" in str(app.query_one("#chain").render())

    drive(app, scenario)
    assert app.failures == []
