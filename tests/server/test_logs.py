"""Task logs over real HTTP: numbered chunks from the worker, pages and a live follow for readers."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from fetchml.core.enums import Role
from fetchml.core.errors import ConflictError, NotFoundError
from fetchml.core.protocol import LOG_NEXT_LINE_HEADER, LOG_QUOTA_HEADER, Assignment, LogChunk, LogPage
from fetchml.events.bus import EventBus
from fetchml.services.logs import LogService, quota_notice
from fetchml.services.principal import Principal
from fetchml.services.write_queue import WriteQueue
from fetchml.store.db import Database
from tests.harness import ServerHandle, expect_error
from tests.protocol_kit import BoxKeys as K
from tests.protocol_kit import FakeWorker, box_keys, box_one, submit


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return box_keys(srv)


@pytest.fixture
def w(srv: ServerHandle, ks: K) -> Iterator[FakeWorker]:
    yield from box_one(srv, ks)


@pytest.fixture
def running(srv: ServerHandle, ks: K, w: FakeWorker) -> Assignment:
    """A task claimed by `w` and reported running (attempt 1)."""
    t = submit(srv, ks.user, "logged")
    a = w.must_claim()
    assert a.task.id == t.id
    w.report(a, "running")
    return a


def page(srv: ServerHandle, key: str, task_id: str, **params: Any) -> LogPage:
    with srv.http(key) as http:
        r = http.get(f"/v1/tasks/{task_id}/logs", params=params)
    assert r.status_code == 200, r.text
    return LogPage.model_validate(r.json())


def append(
    srv: ServerHandle, key: str, task_id: str, attempt: int, start: int, lines: list[str]
) -> httpx.Response:
    with srv.http(key) as http:
        return http.post(
            f"/v1/tasks/{task_id}/logs", json={"attempt": attempt, "start_line": start, "lines": lines}
        )


def test_chunks_are_numbered_and_resends_are_stored_once(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    tid = running.task.id
    r = append(srv, ks.w1, tid, 1, 0, ["l0", "l1", "l2"])
    assert r.status_code == 204 and r.content == b""
    assert (r.headers[LOG_NEXT_LINE_HEADER], r.headers[LOG_QUOTA_HEADER]) == ("3", "ok")
    assert append(srv, ks.w1, tid, 1, 0, ["l0", "l1", "l2"]).status_code == 204  # a resend
    assert append(srv, ks.w1, tid, 1, 3, ["l3", "l4"]).status_code == 204
    # Overlapping: lines 2..4 are already there (and are not rewritten); only line 5 is new.
    assert append(srv, ks.w1, tid, 1, 2, ["XX", "XX", "XX", "l5"]).status_code == 204
    assert append(srv, ks.w1, tid, 1, 6, []).status_code == 204

    p = page(srv, ks.user, tid)
    assert p.lines == ["l0", "l1", "l2", "l3", "l4", "l5"]
    assert (p.task_id, p.status, p.offset, p.next_offset, p.done) == (tid, "running", 0, 6, False)

    # A gap would lose lines: refused, and nothing is stored. Not a 409: the worker must tell
    # "lines are missing" from "this attempt is not yours any more".
    err = expect_error(append(srv, ks.w1, tid, 1, 8, ["l8"]), 422, "VALIDATION_ERROR")
    assert "8" in err["error"] and "6" in err["error"]
    assert page(srv, ks.user, tid).lines == p.lines

    # Lines keep their characters: unicode, markup-looking text, empty lines, spaces.
    odd = ["", "  indented", "ünïcødé ✓", "[red]not markup[/red]", "tab\there"]
    w.log(running, 6, odd)
    assert page(srv, ks.user, tid, offset=6).lines == odd


def test_offset_and_tail(srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment) -> None:
    tid = running.task.id
    w.log(running, 0, [f"line {i}" for i in range(10)])
    p = page(srv, ks.user, tid, offset=7)
    assert (p.offset, p.next_offset, p.lines) == (7, 10, ["line 7", "line 8", "line 9"])
    p = page(srv, ks.user, tid, tail=3)
    assert (p.offset, p.next_offset, p.lines) == (7, 10, ["line 7", "line 8", "line 9"])
    p = page(srv, ks.user, tid, tail=50)
    assert (p.offset, len(p.lines)) == (0, 10)
    p = page(srv, ks.user, tid, offset=10)
    assert (p.offset, p.next_offset, p.lines, p.done) == (10, 10, [], False)
    assert page(srv, ks.user, tid, offset=99).lines == []
    assert page(srv, ks.user, tid, tail=0).lines == []
    # Admins may read logs too (who else may is tested in tests/security).
    assert page(srv, ks.admin, tid, tail=1).lines == ["line 9"]
    with srv.http(ks.user) as http:
        expect_error(
            http.get(f"/v1/tasks/{tid}/logs", params={"offset": 1, "tail": 1}), 400, "BAD_REQUEST"
        )
        expect_error(http.get(f"/v1/tasks/{tid}/logs", params={"offset": -1}), 400, "BAD_REQUEST")
        expect_error(http.get(f"/v1/tasks/{tid}/logs", params={"tail": -1}), 400, "BAD_REQUEST")

    # Once the task has ended and every line was read, the page says so.
    w.run_to(running, "collecting", "completed")
    p = page(srv, ks.user, tid, offset=4)
    assert (p.status, p.next_offset, p.done) == ("completed", 10, True)
    assert page(srv, ks.user, tid, offset=0).done is True


def test_pages_are_limited_and_continue_at_next_offset(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    lines = [f"{i}" for i in range(5200)]
    w.log(running, 0, lines[:5000])
    w.log(running, 5000, lines[5000:])
    w.run_to(running, "collecting", "completed")
    first = page(srv, ks.user, running.task.id)
    assert (first.offset, first.next_offset, first.done) == (0, 5000, False)  # more to read
    second = page(srv, ks.user, running.task.id, offset=first.next_offset)
    assert (second.offset, second.next_offset, second.done) == (5000, 5200, True)
    assert first.lines + second.lines == lines


def test_a_page_of_long_lines_stops_at_the_byte_budget(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    # 400 maximal lines are ~6.5 MB: one page would hold them all by count, not by bytes.
    lines = [f"{i:04d}" + "x" * 16000 for i in range(400)]
    for start in range(0, 400, 50):
        w.log(running, start, lines[start : start + 50])
    w.run_to(running, "collecting", "completed")
    got: list[str] = []
    offset = 0
    for _ in range(10):
        p = page(srv, ks.user, running.task.id, offset=offset)
        assert sum(len(line) for line in p.lines) <= 4 * 1024 * 1024
        got += p.lines
        offset = p.next_offset
        if p.done:
            break
    assert got == lines
    assert offset == 400

def test_follow_streams_lines_as_they_are_appended(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    """The reader sees each chunk before the next is written, and the stream ends with the task."""
    tid = running.task.id
    w.log(running, 0, ["before follow"])
    seen: list[str] = []
    got = threading.Condition()
    errors: list[BaseException] = []

    def saw(n: int) -> None:
        """Blocks until the follower has received n lines."""
        with got:
            if not got.wait_for(lambda: len(seen) >= n, timeout=5):
                raise AssertionError(f"follower saw {seen} while waiting for {n} lines")

    def writer() -> None:
        try:
            n = 1
            for batch in (["a1"], ["b1", "b2"], ["c1"]):
                saw(n)  # every earlier line reached the follower before more are written
                w.log(running, n, batch)
                n += len(batch)
            saw(n)
            w.run_to(running, "collecting", "completed")
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    started = time.monotonic()
    with srv.client(ks.user) as c:
        for line in c.logs.follow(tid):
            with got:
                seen.append(line)
                got.notify_all()
    th.join(10)
    assert not errors, errors
    assert seen == ["before follow", "a1", "b1", "b2", "c1"]
    assert time.monotonic() - started < 8  # ended when the task did, not on a timeout


def test_follow_from_offset_or_tail_of_an_ended_task_ends_at_once(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    w.log(running, 0, ["x0", "x1", "x2", "x3"])
    w.run_to(running, "failed", exit_code=1)
    with srv.client(ks.user) as c:
        assert list(c.logs.follow(running.task.id, offset=1)) == ["x1", "x2", "x3"]
        assert list(c.logs.follow(running.task.id, tail=2)) == ["x2", "x3"]
    with srv.http(ks.user) as http:
        r = http.get(f"/v1/tasks/{running.task.id}/logs", params={"follow": "true"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "x0\nx1\nx2\nx3\n"


def test_logs_across_attempts_read_as_one_stream(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    w.log(running, 0, ["one-a", "one-b"])
    assert w.register().lost_tasks == [running.task.id]  # restart: attempt 1 is lost
    a2 = w.must_claim()
    assert a2.attempt == 2
    w.report(a2, "running")
    w.log(a2, 0, ["two-a"])  # each attempt numbers its lines from 0
    with pytest.raises(ConflictError):
        w.log(running, 2, ["one-c"])  # the stale attempt is fenced off
    p = page(srv, ks.user, running.task.id)
    assert (p.lines, p.next_offset) == (["one-a", "one-b", "two-a"], 3)


def test_stale_attempts_other_workers_and_ended_tasks_are_refused(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    tid = running.task.id
    expect_error(append(srv, ks.w1, tid, 2, 0, ["future"]), 409, "CONFLICT")
    expect_error(append(srv, ks.w2, tid, 1, 0, ["not mine"]), 403, "FORBIDDEN")
    expect_error(append(srv, ks.user, tid, 1, 0, ["users cannot"]), 403, "FORBIDDEN")
    expect_error(append(srv, ks.w1, tid, 1, -1, ["x"]), 422, "VALIDATION_ERROR")
    assert append(srv, ks.w1, tid, 1, 0, ["ok"]).status_code == 204
    w.run_to(running, "collecting", "completed")
    # The task has ended: its log is closed (a follower was already told it is complete).
    expect_error(append(srv, ks.w1, tid, 1, 1, ["after the end"]), 409, "CONFLICT")
    assert page(srv, ks.user, tid).lines == ["ok"]

    queued = submit(srv, ks.user, "never-claimed").id
    expect_error(append(srv, ks.w1, queued, 1, 0, ["x"]), 409, "CONFLICT")


def test_unknown_tasks_are_404(srv: ServerHandle, ks: K) -> None:
    with srv.http(ks.user) as http:
        expect_error(http.get("/v1/tasks/no-such-task/logs"), 404, "NOT_FOUND")
        expect_error(http.get("/v1/tasks/no-such-task/logs", params={"follow": "true"}), 404, "NOT_FOUND")
    expect_error(append(srv, ks.w1, "no-such-task", 1, 0, ["x"]), 404, "NOT_FOUND")
    with srv.client(ks.user) as c, pytest.raises(NotFoundError):
        list(c.logs.follow("no-such-task"))


def quota_server(factory: Callable[..., ServerHandle], **env: str) -> tuple[ServerHandle, str, FakeWorker]:
    srv = factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", FETCHML_HEARTBEAT_TIMEOUT="300", **env)
    admin = srv.make_key("root", "admin")
    worker = FakeWorker(srv, srv.make_key("qw", "worker"), name="qw")
    worker.register()
    return srv, admin, worker


def test_over_the_quota_lines_are_acknowledged_and_dropped_with_one_notice(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv, admin, worker = quota_server(server_factory, FETCHML_MAX_LOG_LINES_PER_TASK="10")
    tid = submit(srv, admin, "chatty").id
    a = worker.must_claim()
    worker.report(a, "running")
    r = append(srv, worker.key, tid, 1, 0, [f"l{i}" for i in range(8)])
    assert (r.status_code, r.headers[LOG_NEXT_LINE_HEADER], r.headers[LOG_QUOTA_HEADER]) == (204, "8", "ok")
    r = append(srv, worker.key, tid, 1, 8, [f"l{i}" for i in range(8, 15)])
    assert (r.status_code, r.headers[LOG_NEXT_LINE_HEADER], r.headers[LOG_QUOTA_HEADER]) == (
        204,
        "15",
        "reached",
    )
    r = append(srv, worker.key, tid, 1, 15, [f"l{i}" for i in range(15, 20)])
    assert (r.status_code, r.headers[LOG_NEXT_LINE_HEADER], r.headers[LOG_QUOTA_HEADER]) == (
        204,
        "20",
        "reached",
    )
    assert (
        append(srv, worker.key, tid, 1, 12, ["resent", "lines"]).status_code == 204
    )  # stored once: not at all
    expected = [f"l{i}" for i in range(10)]
    assert page(srv, admin, tid).lines == [*expected, quota_notice(10)]

    # The quota is the task's: a later attempt's lines are dropped too, counted in the same notice.
    assert worker.register().lost_tasks == [tid]
    a2 = worker.must_claim()
    worker.report(a2, "running")
    r = append(srv, worker.key, tid, 2, 0, ["two-a", "two-b", "two-c"])
    assert (r.status_code, r.headers[LOG_QUOTA_HEADER]) == (204, "reached")
    p = page(srv, admin, tid)
    assert (p.lines, p.next_offset) == ([*expected, quota_notice(13)], 11)
    assert page(srv, admin, tid, tail=2).lines == ["l9", quota_notice(13)]
    worker.close()


def test_the_byte_quota_counts_utf8_bytes(server_factory: Callable[..., ServerHandle]) -> None:
    srv, admin, worker = quota_server(server_factory, FETCHML_MAX_LOG_BYTES_PER_TASK="1024")
    tid = submit(srv, admin, "wide").id
    a = worker.must_claim()
    worker.report(a, "running")
    line = "é" * 150  # 300 bytes
    r = append(srv, worker.key, tid, 1, 0, [line] * 5)
    assert (r.status_code, r.headers[LOG_QUOTA_HEADER]) == (204, "reached")
    assert page(srv, admin, tid).lines == [line] * 3 + [quota_notice(2)]
    worker.close()


@pytest.mark.slow
def test_an_append_reads_one_state_row_and_never_counts_lines(
    server_factory: Callable[..., ServerHandle],
) -> None:
    """In-process LogService on the server's own database: the 1000th chunk's statements hold
    no COUNT, and it costs about what the first did."""
    srv, admin, worker = quota_server(server_factory)
    tid = submit(srv, admin, "long").id
    a = worker.must_claim()
    worker.report(a, "running")
    db = Database(srv.db_url)
    writer = WriteQueue(db)
    writer.start()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    for engine in {db.write_engine, db.read_engine}:
        event.listen(engine, "before_cursor_execute", seen)
    svc = LogService(db, writer, EventBus())
    root = Principal(user_id="root", role=Role.ADMIN, key_id="test")
    times: list[float] = []

    async def run() -> None:
        for i in range(1000):
            if i == 999:
                statements.clear()
            t0 = time.perf_counter()
            await svc.append(root, tid, LogChunk(attempt=a.attempt, start_line=i * 20, lines=[f"{i}"] * 20))
            times.append(time.perf_counter() - t0)

    try:
        asyncio.run(run())
    finally:
        writer.stop()
        db.dispose()
    last = [s.lower() for s in statements]
    assert last and not any("count(" in s for s in last), last
    assert any("task_log_state" in s for s in last)
    first, late = statistics.median(times[:50]), statistics.median(times[-50:])
    print(f"append median: first 50 chunks {first * 1000:.1f} ms, last 50 {late * 1000:.1f} ms")
    assert late < first * 3 + 0.02
    assert page(srv, admin, tid, tail=1).lines == ["999"]
    assert page(srv, admin, tid, offset=19_990).next_offset == 20_000
    worker.close()


def test_lines_no_backend_could_store_are_stored_with_replacement_characters(
    srv: ServerHandle, ks: K, w: FakeWorker, running: Assignment
) -> None:
    """A NUL (PostgreSQL text refuses it) or a lone surrogate must not become a 500 that the
    worker would retry forever."""
    tid = running.task.id
    assert append(srv, w.key, tid, 1, 0, ["nul\x00here"]).status_code == 204
    with srv.http(w.key) as http:
        r = http.post(
            f"/v1/tasks/{tid}/logs",
            content=b'{"attempt": 1, "start_line": 1, "lines": ["lone \\ud800 surrogate"]}',
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code in (204, 400, 422), r.text
    lines = page(srv, ks.admin, tid).lines
    assert lines[0] == "nul\ufffdhere"
    if r.status_code == 204:
        assert lines[1] == "lone \ufffd surrogate"
