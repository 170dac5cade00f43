"""The SSE streams on real servers: each change's event in commit order, resume with
Last-Event-ID (no gap, no duplicate), the job stream's end, the per-key cap, keep-alives,
nothing for a rolled-back change, and events crossing servers on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import Keys, ServerHandle, expect_error, make_keys, servers_on_one_database
from tests.protocol_kit import FakeWorker, submit
from tests.sse_kit import Frame, SseReader

STATUS = "/v1/scheduler/status/stream"
FAST = {"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}


def job_path(task_id: str) -> str:
    return f"/v1/scheduler/jobs/{task_id}/stream"


def names(frames: list[Frame]) -> list[str]:
    return [
        f"{f.event}:{(f.data or {}).get('to', '')}" if f.event == "task_transition" else str(f.event)
        for f in frames
    ]


@pytest.fixture
def fresh(server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = server_factory(**FAST)
    return srv, make_keys(srv)


def test_scheduler_stream_sends_each_change_in_commit_order(
    fresh: tuple[ServerHandle, Keys], workers: list[FakeWorker]
) -> None:
    srv, k = fresh
    with SseReader(srv, k.admin, STATUS) as sse:
        snap = sse.next()
        assert snap.event == "snapshot" and snap.data is not None
        assert snap.data["resumed"] is False and "reason" not in snap.data
        assert snap.data["status"]["batch_queue_depth"] == 0 and snap.data["workers"] == []
        assert snap.id == snap.data["last_event_id"] == 0

        task = submit(srv, k.user, "ordered")
        with srv.http(k.user) as http:
            assert (
                http.patch(f"/v1/scheduler/jobs/{task.id}/priority", json={"priority": 8}).status_code == 200
            )
        w = FakeWorker(srv, k.worker)
        workers.append(w)
        w.register(gpus=[0])
        a = w.must_claim()
        w.run_to(a, "running", "collecting", "completed")
        frames = sse.until(lambda f: f.event == "task_transition" and (f.data or {}).get("to") == "completed")
    # ids are dense and rising: a client that saw N saw everything before it.
    assert [f.id for f in frames] == list(range(1, len(frames) + 1))
    kinds = names(frames)
    assert kinds[:5] == [
        "task_transition:queued",
        "queue_depth",
        "priority_changed",
        "queue_depth",
        "worker_connected",
    ]
    assert kinds.index("task_transition:preparing") < kinds.index("task_transition:running")
    assert kinds[-1] == "task_transition:completed"
    first = frames[0].data or {}
    assert first["task_id"] == task.id and first["user_id"] == "alice" and "from" not in first
    prio = frames[2].data or {}
    assert (prio["from"], prio["to"]) == (5, 8)
    depth = [f.data for f in frames if f.event == "queue_depth"]
    assert depth[0] == {**depth[0], "depth": 1, "by_priority": {"5": 1}}
    assert depth[1] is not None and depth[1]["by_priority"] == {"8": 1}
    assert depth[-1] is not None and depth[-1]["depth"] == 0
    placed = next(
        f.data for f in frames if f.event == "task_transition" and (f.data or {}).get("to") == "preparing"
    )
    assert placed is not None and placed["worker_id"] == w.name and placed["nodes"][0]["worker_id"] == w.name
    done = frames[-1].data or {}
    assert done["exit_code"] == 0 and done["cancelled"] is False


def test_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(
    fresh: tuple[ServerHandle, Keys],
) -> None:
    srv, k = fresh
    with SseReader(srv, k.admin, STATUS) as sse:
        sse.next()  # snapshot
        first = [submit(srv, k.user, f"before-{i}").id for i in range(3)]
        seen = sse.until(lambda f: f.event == "task_transition" and (f.data or {}).get("task_id") == first[1])
    last = seen[-1].id
    assert last is not None
    # While no stream is open: more changes, which the resumed stream must replay.
    later = [submit(srv, k.user, f"after-{i}").id for i in range(3)]
    with SseReader(srv, k.admin, STATUS, last_event_id=last) as sse:
        frames = sse.until(
            lambda f: f.event == "task_transition" and (f.data or {}).get("task_id") == later[-1]
        )
    assert all(f.event != "snapshot" for f in frames)
    assert [f.id for f in frames] == list(range(last + 1, last + 1 + len(frames)))
    replayed = [(f.data or {}).get("task_id") for f in frames if f.event == "task_transition"]
    assert replayed == [first[2], *later]


def test_resume_outside_the_window_gets_a_fresh_snapshot_that_says_so(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(FETCHML_EVENT_REPLAY_WINDOW="100", **FAST)
    k = make_keys(srv)
    with srv.http(k.user) as http:
        for i in range(160):  # 320 events: the oldest are pruned past the window
            assert http.post("/v1/tasks", json={"job_name": f"n{i}", "entrypoint": "t.py"}).status_code == 201
    for asked in (1, 10_000):  # too old; newer than anything committed
        with SseReader(srv, k.admin, STATUS, last_event_id=asked) as sse:
            snap = sse.next()
        assert snap.event == "snapshot" and snap.data is not None
        assert snap.data["reason"] == "outside_replay_window" and snap.data["resumed"] is False
        assert snap.id == snap.data["last_event_id"] >= 320
        assert snap.data["status"]["batch_queue_depth"] == 160
    with srv.http(k.admin) as http:
        r = http.get(STATUS, headers={"Last-Event-ID": "abc"})
        expect_error(r, 400, "BAD_REQUEST")


def test_job_stream_ends_after_the_terminal_state(
    fresh: tuple[ServerHandle, Keys], workers: list[FakeWorker]
) -> None:
    srv, k = fresh
    task = submit(srv, k.user, "to-the-end")
    w = FakeWorker(srv, k.worker)
    workers.append(w)
    w.register()
    with SseReader(srv, k.user, job_path(task.id)) as sse:
        snap = sse.next()
        assert snap.event == "snapshot" and snap.data is not None
        assert snap.data["task"]["id"] == task.id and snap.data["terminal"] is False
        a = w.must_claim()
        w.run_to(a, "running", "failed", exit_code=3)
        frames = sse.rest()
        assert sse.closed_by_server
    assert [f.event for f in frames] == ["transition"] * 3 + ["end"]
    assert [(f.data or {})["to"] for f in frames[:3]] == ["preparing", "running", "failed"]
    end = frames[-1].data or {}
    assert end == {**end, "task_id": task.id, "status": "failed", "exit_code": 3, "outcome": "failed"}
    assert frames[-1].id is None
    # Opened after the end: the snapshot and the end at once, then the stream closes.
    with SseReader(srv, k.user, job_path(task.id)) as sse:
        frames = sse.rest()
    assert [f.event for f in frames] == ["snapshot", "end"]
    # Resumed after its last event: only the end.
    last = frames[0].id
    with SseReader(srv, k.user, job_path(task.id), last_event_id=last) as sse:
        assert [f.event for f in sse.rest()] == ["end"]


def test_job_stream_access(fresh: tuple[ServerHandle, Keys]) -> None:
    srv, k = fresh
    task = submit(srv, k.user, "mine")
    with srv.http(k.other) as http:
        expect_error(http.get(job_path(task.id)), 403, "FORBIDDEN")
    with srv.http(k.worker) as http:
        expect_error(http.get(job_path(task.id)), 403, "FORBIDDEN")
    with srv.http(k.user) as http:
        expect_error(http.get(job_path("no-such-task")), 404, "NOT_FOUND")
        expect_error(http.get(STATUS), 403, "FORBIDDEN")
    with srv.http("fml_not_a_key") as http:
        expect_error(http.get(STATUS), 401, "UNAUTHORIZED")
    with SseReader(srv, k.admin, job_path(task.id)) as sse:
        assert sse.next().event == "snapshot"
        with srv.http(k.user) as http:
            http.delete(f"/v1/tasks/{task.id}")
        frames = sse.rest()
    assert [f.event for f in frames] == ["transition", "end"]
    assert (frames[-1].data or {})["outcome"] == "cancelled"


def test_a_rolled_back_change_sends_no_event(fresh: tuple[ServerHandle, Keys]) -> None:
    srv, k = fresh
    task = submit(srv, k.user, "done-soon")
    with srv.http(k.user) as http:
        assert http.delete(f"/v1/tasks/{task.id}").status_code == 204
    with SseReader(srv, k.admin, STATUS) as sse:
        start = sse.next()
        with srv.http(k.user) as http:
            # Each of these runs and fails inside a write transaction: nothing may come out.
            assert (
                http.patch(f"/v1/scheduler/jobs/{task.id}/priority", json={"priority": 9}).status_code == 409
            )
            assert http.delete(f"/v1/tasks/{task.id}").status_code == 409
            bad = {"job_name": "r", "entrypoint": "t.py", "reservation_id": "no-such"}
            assert http.post("/v1/tasks", json=bad).status_code in (404, 409, 422)
        marker = submit(srv, k.user, "marker")
        frames = sse.until(lambda f: f.event == "task_transition")
    assert frames[0].id == (start.id or 0) + 1
    assert (frames[0].data or {})["task_id"] == marker.id


def test_the_stream_cap_per_key(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_MAX_STREAMS_PER_KEY="2", **FAST)
    k = make_keys(srv)
    task = submit(srv, k.user, "capped")
    a = SseReader(srv, k.admin, STATUS)
    b = SseReader(srv, k.admin, job_path(task.id))
    try:
        assert a.next().event == "snapshot" and b.next().event == "snapshot"
        with srv.http(k.admin) as http:
            body = expect_error(http.get(STATUS), 429, "RATE_LIMITED")
        assert "2 open streams" in body["error"]
        # Another key has its own budget.
        with SseReader(srv, k.user, job_path(task.id)) as other:
            assert other.status == 200 and other.next().event == "snapshot"
        a.close()
        # The slot comes back once the server sees the disconnect.
        deadline = time.monotonic() + 10
        while True:
            c = SseReader(srv, k.admin, STATUS)
            if c.status == 200:
                assert c.next().event == "snapshot"
                c.close()
                break
            c.close()
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.1)
    finally:
        a.close()
        b.close()


def test_keepalive_comments(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_STREAM_KEEPALIVE_SECONDS="0.3", **FAST)
    k = make_keys(srv)
    with SseReader(srv, k.admin, STATUS) as sse:
        assert sse.next().event == "snapshot"
        comments = [sse.next(5, comments=True) for _ in range(2)]
    assert all(c.comment == "keep-alive" for c in comments)


def test_open_streams_gauge(fresh: tuple[ServerHandle, Keys]) -> None:
    srv, k = fresh

    def gauge() -> float:
        with srv.http(k.admin) as http:
            text = http.get("/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("fetchml_sse_connections "))
        return float(line.split()[1])

    assert gauge() == 0
    with SseReader(srv, k.admin, STATUS) as sse:
        sse.next()
        assert gauge() == 1
    deadline = time.monotonic() + 30  # the server notices the disconnect (a loaded machine: seconds)
    while gauge() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_an_event_committed_through_server_b_reaches_a_stream_on_server_a(
    tmp_path: Path, workers: list[FakeWorker]
) -> None:
    with servers_on_one_database(tmp_path, env=FAST) as (a, b):
        k = make_keys(a)
        with SseReader(a, k.admin, STATUS) as sse:
            assert sse.next().event == "snapshot"
            latencies = []
            for i in range(5):
                t0 = time.monotonic()
                task = submit(b, k.user, f"via-b-{i}")
                sse.until(lambda f, tid=task.id: (f.data or {}).get("task_id") == tid, timeout=5)
                latencies.append(time.monotonic() - t0)
        assert max(latencies) < 1.0, latencies
        # A worker long-polling A wakes for a task submitted on B (no one-second re-check).
        w = FakeWorker(a, k.worker)
        workers.append(w)
        w.register(batch_slots=10)
        for _ in range(5):  # the five tasks above
            assert w.claim() is not None
        t0 = time.monotonic()
        got: list[float] = []

        def long_poll() -> None:
            if w.claim(wait=10) is not None:
                got.append(time.monotonic() - t0)

        th = threading.Thread(target=long_poll)
        th.start()
        time.sleep(0.5)  # the claim is waiting on A
        t0 = time.monotonic()
        submit(b, k.user, "wake-a")
        th.join(15)
        assert got and got[0] < 1.0, got


def test_worker_and_reservation_events(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_HEARTBEAT_TIMEOUT="5", FETCHML_SWEEP_INTERVAL="0.2", **FAST)
    k = make_keys(srv)
    drained = FakeWorker(srv, k.worker)
    silent = FakeWorker(srv, k.worker)
    try:
        with SseReader(srv, k.admin, STATUS) as sse:
            sse.next()
            drained.register()
            silent.register(gpus=[0])
            drained.register()  # registered again while active: a restart is a new connection
            with srv.http(k.admin) as http:
                assert http.delete(f"/v1/scheduler/workers/{drained.name}").status_code == 204
            drained.heartbeat()  # nothing held: a draining worker goes offline
            with srv.http(k.admin) as http:
                assert http.post("/v1/scheduler/reservations", json={"gpu_count": 1}).status_code == 201
            srv.advance_clock(60)  # past the heartbeat timeout: the sweeper gives `silent` up
            frames = sse.until(
                lambda f: (f.data or {}).get("worker_id") == silent.name and f.event == "worker_disconnected",
                timeout=15,
            )
        got = [
            (f.event, (f.data or {}).get("worker_id"), (f.data or {}).get("reason"))
            for f in frames
            if f.event.startswith("worker")
        ]  # type: ignore[union-attr]
        assert got == [
            ("worker_connected", drained.name, None),
            ("worker_connected", silent.name, None),
            ("worker_connected", drained.name, None),
            ("worker_draining", drained.name, None),
            ("worker_disconnected", drained.name, "offline"),
            ("worker_disconnected", silent.name, "heartbeat_lost"),
        ]
        res = [f.data for f in frames if f.event == "reservation_changed"]
        assert res and res[0] is not None and res[0]["status"] == "active" and res[0]["user_id"] == "root"
    finally:
        drained.close()
        silent.close()


def test_queue_depth_counts_heal_after_a_change_made_outside_fetchml(
    fresh: tuple[ServerHandle, Keys],
) -> None:
    srv, k = fresh
    for i in range(3):
        submit(srv, k.user, f"counted-{i}", priority=6)
    srv.db_exec("DELETE FROM queue_counts")  # an operator's SQL: the kept counts are now wrong
    with SseReader(srv, k.admin, STATUS) as sse:
        sse.next()
        with srv.http(k.user) as http:
            for i in range(140):  # crosses a multiple of 256 event ids: the counts are retaken
                r = http.post(
                    "/v1/tasks", json={"job_name": f"more-{i}", "entrypoint": "t.py", "priority": 6}
                )
                assert r.status_code == 201
        depths = []
        while len(depths) < 140:
            f = sse.next()
            if f.event == "queue_depth" and f.data is not None:
                depths.append(f.data["depth"])
    assert depths[0] == 1  # kept counts moved by the delta only: the drift shows...
    assert depths[-1] == 143  # ...until they are recounted from the tasks themselves
