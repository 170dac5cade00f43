"""Task logs over real HTTP: numbered chunks from the worker, pages and a live follow for readers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fetchml.core.errors import ConflictError, NotFoundError
from fetchml.core.protocol import Assignment, LogPage
from tests.harness import ServerHandle, expect_error
from tests.protocol_kit import FakeWorker, cancel_leftovers, submit


@dataclass
class K:
    admin: str
    user: str
    w1: str
    w2: str


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return K(
        admin=srv.make_key("root", "admin"),
        user=srv.make_key("alice", "user"),
        w1=srv.make_key("box-1", "worker"),
        w2=srv.make_key("box-2", "worker"),
    )


@pytest.fixture
def w(srv: ServerHandle, ks: K) -> Iterator[FakeWorker]:
    worker = FakeWorker(srv, ks.w1)
    worker.register()
    yield worker
    worker.close()
    cancel_leftovers(srv, ks.admin)


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
    assert append(srv, ks.w1, tid, 1, 0, ["l0", "l1", "l2"]).status_code == 204  # a resend
    assert append(srv, ks.w1, tid, 1, 3, ["l3", "l4"]).status_code == 204
    # Overlapping: lines 2..4 are already there (and are not rewritten); only line 5 is new.
    assert append(srv, ks.w1, tid, 1, 2, ["XX", "XX", "XX", "l5"]).status_code == 204
    assert append(srv, ks.w1, tid, 1, 6, []).status_code == 204

    p = page(srv, ks.user, tid)
    assert p.lines == ["l0", "l1", "l2", "l3", "l4", "l5"]
    assert (p.task_id, p.status, p.offset, p.next_offset, p.done) == (tid, "running", 0, 6, False)

    # A gap would lose lines: refused, and nothing is stored.
    err = expect_error(append(srv, ks.w1, tid, 1, 8, ["l8"]), 409, "CONFLICT")
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
    # Workers and admins may read logs too.
    assert page(srv, ks.w2, tid, tail=1).lines == ["line 9"]
    assert page(srv, ks.admin, tid, tail=1).lines == ["line 9"]
    with srv.http(ks.user) as http:
        expect_error(
            http.get(f"/v1/tasks/{tid}/logs", params={"offset": 1, "tail": 1}), 422, "VALIDATION_ERROR"
        )
        expect_error(http.get(f"/v1/tasks/{tid}/logs", params={"offset": -1}), 422, "VALIDATION_ERROR")
        expect_error(http.get(f"/v1/tasks/{tid}/logs", params={"tail": -1}), 422, "VALIDATION_ERROR")

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
