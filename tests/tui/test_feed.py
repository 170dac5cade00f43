"""The TUI's I/O pieces against a real server: streams stop at once when closed from another
thread (the app does this on exit and when another task is selected), list reads page through
everything, a user key is told apart from an admin key, and `fetchml tui` is a command."""

from __future__ import annotations

import threading
import time
from typing import Any

from fetchml.client import FetchmlClient
from fetchml.tui import feed as io
from tests.cli.conftest import cli_env, run
from tests.harness import Keys, ServerHandle


def submit(server: ServerHandle, key: str, n: int = 1, **body: Any) -> list[str]:
    ids = []
    with server.http(key) as http:
        for i in range(n):
            # gpu=64: no worker has that many, so the task stays queued.
            r = http.post(
                "/v1/tasks", json={"job_name": f"feed-{i}", "entrypoint": "true", "gpu": 64, **body}
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    return ids


def blocked_then_closed(read: Any, close: Any, started: threading.Event) -> float:
    """Runs `read` on a thread; once `started`, calls `close` here; how long the thread took to
    end after that."""
    done = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            read()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    assert started.wait(20), "the stream never started"
    time.sleep(0.3)  # let the reader block on the socket
    assert not done.is_set()
    t0 = time.monotonic()
    close()
    assert done.wait(5), "closing did not wake the blocked reader"
    assert errors == [], errors
    return time.monotonic() - t0


def test_closing_an_event_stream_from_another_thread_wakes_its_reader(
    shared_server: ServerHandle, keys: Keys
) -> None:
    with FetchmlClient(shared_server.url, keys.admin) as c:
        stream = c.streams.scheduler()
        started = threading.Event()

        def read() -> None:
            for _ in stream:
                started.set()

        assert blocked_then_closed(read, stream.close, started) < 2.0


def test_closing_a_log_follow_from_another_thread_wakes_its_reader(
    shared_server: ServerHandle, keys: Keys
) -> None:
    [tid] = submit(shared_server, keys.user)
    with FetchmlClient(shared_server.url, keys.user) as c:
        follow = c.logs.follower(tid, offset=0)
        started = threading.Event()

        def read() -> None:
            # A queued task's follow stays open (no line yet): mark when the response is in.
            while follow._response is None and not follow.closed:
                time.sleep(0.01)
            started.set()

        def read_all() -> None:
            threading.Thread(target=read, daemon=True).start()
            assert list(follow) == []

        assert blocked_then_closed(read_all, follow.close, started) < 2.0
        c.tasks.cancel(tid)


def test_feeds_stop_when_told(shared_server: ServerHandle, keys: Keys) -> None:
    """SchedulerFeed.run returns soon after stop(), from another thread."""
    seen: list[object] = []
    with FetchmlClient(shared_server.url, keys.admin) as c:
        f = io.SchedulerFeed(c, seen.append)
        t = threading.Thread(target=f.run, daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while not any(isinstance(x, io.Seed) for x in seen) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(isinstance(x, io.Seed) for x in seen)
        assert [x for x in seen if isinstance(x, io.Role)] == [io.Role("admin")]
        f.stop()
        t.join(5)
        assert not t.is_alive()


def test_a_user_key_is_told_apart_and_loads_every_page(shared_server: ServerHandle, keys: Keys) -> None:
    mine = submit(shared_server, keys.user, 3)
    seen: list[object] = []
    with FetchmlClient(shared_server.url, keys.user) as c:
        io.SchedulerFeed(c, seen.append).run()  # returns at once: 403
        assert seen == [io.Role("user")]
        seed = io.load_user_seed(c)
        assert seed.replace and not seed.live
        assert set(mine) <= {t["id"] for t in seed.queued}
        # Paging: one task per page reads them all, once each.
        io_page, io.PAGE = io.PAGE, 1
        try:
            queued = io.list_tasks(c, "queued")
        finally:
            io.PAGE = io_page
        ids = [t["id"] for t in queued]
        assert len(ids) == len(set(ids)) and set(mine) <= set(ids)
        for tid in mine:
            c.tasks.cancel(tid)


def test_failure_text_has_code_and_trace() -> None:
    from fetchml.core.errors import ConflictError

    f = io.Failure.of(ConflictError("Task already ended", trace_id="abc-123"))
    assert f.text() == "CONFLICT: Task already ended (trace abc-123)"
    assert io.Failure.of(ValueError("x")).code == "INTERNAL_ERROR"


def test_the_tui_command_is_registered(shared_server: ServerHandle) -> None:
    result = run(["tui", "--help"], cli_env(shared_server))
    assert result.returncode == 0, result.stderr
    assert "dashboard" in result.stdout and "--download-dir" in result.stdout
