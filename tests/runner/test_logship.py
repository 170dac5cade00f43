"""LogShipper against a real server: order, numbering, byte-bounded chunks, the last lines; a
bounded buffer that spools to disk and loses nothing while the server is away; when it stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from fetchml.core.protocol import Assignment
from fetchml.runner.logship import MAX_CHUNK_BYTES, LogShipper, _chunk, spool_notice
from fetchml.services.logs import quota_notice
from tests.harness import ServerHandle
from tests.protocol_kit import FakeWorker, submit

# Leases outlive a server restart in these tests: the FakeWorker does not heartbeat.
SLOW_LEASES = {"FETCHML_HEARTBEAT_TIMEOUT": "300", "FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}


def all_lines(srv: ServerHandle, admin: str, task_id: str) -> list[str]:
    got: list[str] = []
    with srv.client(admin) as c:
        while True:
            page = c.logs.page(task_id, offset=len(got))
            got += page.lines
            if not page.lines:
                return got


def running_task(srv: ServerHandle) -> tuple[str, FakeWorker, Assignment]:
    admin = srv.make_key("root", "admin")
    worker = FakeWorker(srv, srv.make_key("w", "worker"))
    worker.register()
    submit(srv, admin)
    a = worker.must_claim()
    worker.report(a, "running")
    return admin, worker, a


def test_chunks_are_bounded_by_bytes_and_never_empty() -> None:
    big = ["x" * 16000] * 100
    first = _chunk(big)
    assert 0 < len(first) < 100
    assert sum(len(line) for line in first) <= MAX_CHUNK_BYTES
    assert _chunk(["y" * (MAX_CHUNK_BYTES * 2)]) == ["y" * (MAX_CHUNK_BYTES * 2)]  # one line always goes
    assert _chunk([]) == []


def test_every_line_arrives_in_order_even_when_chunks_must_be_split(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory()
    admin, worker, a = running_task(srv)
    # 4 MB of output in total: far over the 1 MiB request limit if it went as one chunk.
    lines = [f"{i:05d} " + "z" * 16000 for i in range(250)] + ["the last line"]
    shipper = LogShipper(worker.client, a.task.id, a.attempt, interval=0.05)
    for line in lines:
        shipper.add(line)
    shipper.close()
    assert not shipper.stale and shipper.halted is None
    assert all_lines(srv, admin, a.task.id) == lines
    assert shipper.output().endswith("the last line")
    worker.close()


@pytest.mark.slow
def test_the_buffer_is_bounded_and_nothing_is_lost_while_the_server_is_down(
    server_factory: Callable[..., ServerHandle],
) -> None:
    """The server is killed, the task keeps printing (far more than fits in memory), the server
    comes back on the same port and database: every line arrives exactly once, in order, and
    the memory buffer never held more than its bound (the rest went through the spool file)."""
    srv = server_factory(**SLOW_LEASES)
    admin, worker, a = running_task(srv)
    shipper = LogShipper(
        worker.client, a.task.id, a.attempt, interval=0.05, memory_lines=500, memory_bytes=64 * 1024
    )
    lines = [f"line {i}" for i in range(60_000)]
    peak = [0]

    def watch(stop: threading.Event) -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], shipper.memory_lines_used)
            time.sleep(0.005)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,), daemon=True)
    watcher.start()
    for line in lines[:1000]:
        shipper.add(line)
    deadline = time.monotonic() + 10
    while shipper.sent < 1000 and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.kill9()
    for line in lines[1000:50_000]:
        shipper.add(line)
    time.sleep(1.0)  # a few failed retries
    assert shipper.spooled > 0
    srv.start()
    for line in lines[50_000:]:
        shipper.add(line)
    shipper.close()
    stop.set()
    watcher.join()
    assert shipper.halted is None and not shipper.stale
    got = all_lines(srv, admin, a.task.id)
    assert len(got) == len(lines)
    assert got == lines
    # Memory held at most its bound, or one chunk read back from the spool.
    assert peak[0] <= 5000, peak[0]
    worker.close()


@pytest.mark.slow
def test_a_full_spool_drops_lines_with_one_notice(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(**SLOW_LEASES)
    admin, worker, a = running_task(srv)
    srv.kill9()
    shipper = LogShipper(
        worker.client,
        a.task.id,
        a.attempt,
        interval=0.05,
        memory_lines=10,
        memory_bytes=64 * 1024,
        spool_bytes=20 * 1024,
    )
    lines = [f"line {i:05d}" for i in range(3000)]  # ~16 bytes a record: 20 KiB hold ~1300
    for line in lines:
        shipper.add(line)
    kept = 3000 - shipper.discarded
    assert 1000 < kept < 3000
    srv.start()
    deadline = time.monotonic() + 20
    while shipper.sent < kept and time.monotonic() < deadline:
        time.sleep(0.05)
    shipper.add("after the outage")
    shipper.close()
    got = all_lines(srv, admin, a.task.id)
    assert got == [*lines[:kept], spool_notice(3000 - kept), "after the outage"]
    worker.close()


def test_after_a_cancel_later_lines_are_not_sent(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    admin, worker, a = running_task(srv)
    shipper = LogShipper(worker.client, a.task.id, a.attempt, interval=0.05)
    for i in range(100):
        shipper.add(f"before {i}")
    shipper.cancel()
    for i in range(10_000):
        shipper.add(f"after {i}")
    shipper.close()
    assert all_lines(srv, admin, a.task.id) == [f"before {i}" for i in range(100)]
    assert shipper.discarded == 10_000
    assert shipper.output().endswith("after 9999")  # the report's tail still has the last lines
    worker.close()


def test_a_gap_is_not_taken_for_a_stale_attempt(server_factory: Callable[..., ServerHandle]) -> None:
    """The server answers a gap with 422, a stale attempt with 409: only the second makes the
    worker give the attempt up (skip its report)."""
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    _, worker, a = running_task(srv)
    worker.client.logs.append(a.task.id, a.attempt, 0, ["from elsewhere"])
    shipper = LogShipper(worker.client, a.task.id, a.attempt, interval=0.05)
    shipper._sent = 5  # as if lines 1..4 had been acknowledged and then lost by the server
    shipper.add("x")
    shipper.close()
    assert (shipper.halted, shipper.stale) == ("refused", False)

    stale = LogShipper(worker.client, a.task.id, a.attempt + 1, interval=0.05)
    stale.add("y")
    stale.close()
    assert (stale.halted, stale.stale) == ("stale", True)


def test_the_server_quota_stops_the_shipper(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", FETCHML_MAX_LOG_LINES_PER_TASK="300")
    admin, worker, a = running_task(srv)
    shipper = LogShipper(worker.client, a.task.id, a.attempt, interval=0.05)
    for i in range(20_000):
        shipper.add(f"l{i}")
    shipper.close()
    assert shipper.halted == "quota" and shipper.quota_reached and not shipper.stale
    got = all_lines(srv, admin, a.task.id)
    assert got[:300] == [f"l{i}" for i in range(300)]
    assert len(got) == 301 and got[300].startswith("[fetchml: log quota reached, ")
    # The shipper stopped sending: far fewer than the 19,700 over the quota reached the server.
    dropped = int(got[300].split(", ")[1].split()[0])
    assert got[300] == quota_notice(dropped) and dropped < 19_700
    worker.close()
