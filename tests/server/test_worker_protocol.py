"""The worker protocol over real HTTP: a test plays the worker by hand with a worker-role key.

register, claim (long poll), heartbeat (lease renewal, commands), report (state machine,
fencing by attempt), lease expiry and retries, cancel of a running task.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.protocol import Assignment, WorkerCapabilities
from fetchml.core.timeutil import utcnow
from tests.harness import ServerHandle, expect_error
from tests.protocol_kit import BoxKeys as K
from tests.protocol_kit import FakeWorker, box_keys, cancel_leftovers, get_task, submit, unique


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return box_keys(srv)


@pytest.fixture(scope="module")
def fast(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    """Leases of 30 s, swept every 0.2 s: tests move its clock past a lease (ServerHandle.
    advance_clock) instead of waiting, so a slow machine never expires one by accident."""
    return module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
        FETCHML_HEARTBEAT_INTERVAL="0.5",
        FETCHML_HEARTBEAT_TIMEOUT=str(FAST_LEASE),
        FETCHML_SWEEP_INTERVAL="0.2",
        FETCHML_CLAIM_WAIT="1",
    )


FAST_LEASE = 30.0


def pass_time(srv: ServerHandle, seconds: float, *beating: Callable[[], object]) -> None:
    """Moves the server's clock `seconds` forward in steps of a third of a lease, calling each
    of `beating` (heartbeats) after every step: those stay alive, everything else ages."""
    left = seconds
    while left > 0:
        step = min(left, FAST_LEASE / 3)
        srv.advance_clock(step)
        left -= step
        for beat in beating:
            beat()


@pytest.fixture(scope="module")
def fks(fast: ServerHandle) -> K:
    return box_keys(fast)


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Claims take any queued task that fits: leave none behind for the next test."""
    yield
    for server, keys in (("srv", "ks"), ("fast", "fks")):
        if keys in request.fixturenames:
            cancel_leftovers(request.getfixturevalue(server), request.getfixturevalue(keys).admin)


def worker(made: list[FakeWorker], srv: ServerHandle, key: str, **register: Any) -> FakeWorker:
    w = FakeWorker(srv, key)
    made.append(w)
    w.register(**register)
    return w


def post(srv: ServerHandle, key: str, path: str, body: Any = None, **kw: Any) -> Any:
    with srv.http(key) as http:
        return http.post(path, json=body, **kw)


def audit_events(srv: ServerHandle, admin: str, event_type: str, task_id: str) -> list[dict[str, Any]]:
    with srv.http(admin) as http:
        page = http.get("/v1/audit/events", params={"event_type": event_type, "limit": 1000}).json()
    return [e for e in page["events"] if e["resource"] == f"task:{task_id}" and e["event_type"] == event_type]


def wait_until(pred: Callable[[], bool], timeout: float, tick: Callable[[], object] = lambda: None) -> float:
    """Polls pred (calling tick between polls); returns the seconds it took."""
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, f"condition not met within {timeout}s"
        tick()
        time.sleep(0.1)
    return time.monotonic() - start


def wait_sweeps(srv: ServerHandle) -> None:
    """Lets the sweeper (every 0.2 s) run a few times: for checks that something did NOT happen."""
    time.sleep(0.6)


# --- register ---------------------------------------------------------------------------------


def test_register_stores_capabilities_and_answers_the_timings(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    with srv.http(ks.user) as http:
        before = http.get("/v1/queue").json()["workers"]
    w = FakeWorker(srv, ks.w1)
    workers.append(w)
    resp = w.register(
        cpu_cores=32,
        memory_gb=256,
        gpus=[4, 7],
        gpu_type="A100",
        batch_slots=3,
        executor="docker",
        hostname="gpu-box-1",
        fetchml_version="9.9.9",
    )
    assert resp.worker_id == w.name and resp.lost_tasks == []
    assert (resp.heartbeat_interval, resp.heartbeat_timeout, resp.claim_wait) == (2.0, 30.0, 20.0)

    [(caps, batch, status)] = srv.db_exec(
        "SELECT capabilities, batch_total, status FROM workers WHERE id = ?", (w.name,)
    )
    stored = WorkerCapabilities.model_validate(json.loads(caps))
    assert (stored.cpu_cores, stored.memory_gb, stored.gpu_count, stored.gpu_type) == (32, 256, 2, "A100")
    assert [(g.index, g.name, g.memory_mb) for g in stored.gpus] == [(4, "A100", 1024), (7, "A100", 1024)]
    assert (stored.executor, stored.hostname, stored.fetchml_version) == ("docker", "gpu-box-1", "9.9.9")
    assert (batch, status) == (3, "active")
    with srv.http(ks.user) as http:
        assert http.get("/v1/queue").json()["workers"] == before + 1

    # The scheduler places GPUs by the indices the worker declared, not by 0..n-1.
    t = submit(srv, ks.user, "two-gpus", gpu=2, gpu_type="a100")  # type matching ignores case
    a = w.must_claim()
    assert (a.task.id, a.gpus, a.attempt) == (t.id, [4, 7], 1)
    assert a.task.assigned_gpus == [4, 7] and a.task.worker_id == w.name


def test_register_rejects_bad_requests(srv: ServerHandle, ks: K) -> None:
    caps = {"cpu_cores": 1, "memory_gb": 1}
    expect_error(
        post(srv, ks.w1, "/v1/workers/register", {"name": "bad name!", "capabilities": caps}),
        422,
        "VALIDATION_ERROR",
    )
    expect_error(
        post(srv, ks.w1, "/v1/workers/register", {"name": "x", "capabilities": caps, "batch_slots": 0}),
        422,
        "VALIDATION_ERROR",
    )
    expect_error(
        post(srv, ks.user, "/v1/workers/register", {"name": unique("u"), "capabilities": caps}),
        403,
        "FORBIDDEN",
    )


def test_a_name_is_bound_to_the_key_that_registered_it(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1)
    body = {"name": w.name, "capabilities": {"cpu_cores": 1, "memory_gb": 1}}
    # A second key bound to the same name (a rebuilt machine) waits until the first is gone.
    twin = srv.make_key("box-2", "worker", worker_name=w.name)
    err = expect_error(post(srv, twin, "/v1/workers/register", body), 409, "CONFLICT")
    assert w.name in err["error"]
    # A key bound to another name may not register it at all, nor act for it; the owner can.
    expect_error(post(srv, ks.w2, "/v1/workers/register", body), 403, "FORBIDDEN")
    for key in (twin, ks.w2):
        expect_error(post(srv, key, f"/v1/workers/{w.name}/heartbeat", {"active": []}), 403, "FORBIDDEN")
        expect_error(post(srv, key, f"/v1/workers/{w.name}/claim", params={"wait": 0}), 403, "FORBIDDEN")
    assert w.heartbeat().status == "active"
    # Unknown workers: 404 (for a key bound to that name; any other key is refused first).
    ghost = srv.make_key("box-9", "worker", worker_name="no-such-worker")
    expect_error(post(srv, ghost, "/v1/workers/no-such-worker/heartbeat", {"active": []}), 404, "NOT_FOUND")
    expect_error(post(srv, ghost, "/v1/workers/no-such-worker/claim", params={"wait": 0}), 404, "NOT_FOUND")
    expect_error(post(srv, ks.w1, "/v1/workers/no-such-worker/heartbeat", {"active": []}), 403, "FORBIDDEN")


def test_re_register_requeues_what_the_worker_held(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "held")
    a = w.must_claim()
    assert (a.task.id, a.attempt) == (t.id, 1)
    w.report(a, "running")

    resp = w.register()  # the worker restarted
    assert resp.lost_tasks == [t.id]
    task = get_task(srv, ks.user, t.id)
    assert (task.status, task.retry_count, task.worker_id, task.started_at) == ("queued", 1, None, None)

    again = w.must_claim()
    assert (again.task.id, again.attempt, again.task.retry_count) == (t.id, 2, 1)
    with pytest.raises(ConflictError):
        w.report(a, "collecting")  # attempt 1 is gone
    assert w.register().lost_tasks == [t.id]


# --- claim ------------------------------------------------------------------------------------


def test_claim_long_poll_answers_204_after_wait(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    w = worker(workers, srv, ks.w1)
    start = time.monotonic()
    r = post(srv, w.key, f"/v1/workers/{w.name}/claim", params={"wait": 0})
    assert r.status_code == 204 and r.content == b""
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    r = post(srv, w.key, f"/v1/workers/{w.name}/claim", params={"wait": 1})
    took = time.monotonic() - start
    assert r.status_code == 204 and r.content == b"", r.text
    assert 0.9 <= took < 3.0, took
    expect_error(post(srv, w.key, f"/v1/workers/{w.name}/claim", params={"wait": -1}), 400, "BAD_REQUEST")


def test_claim_wait_is_capped_by_the_server(fast: ServerHandle, fks: K, workers: list[FakeWorker]) -> None:
    w = worker(workers, fast, fks.w1)
    assert w.register().claim_wait == 1.0
    start = time.monotonic()
    assert w.claim(wait=30) is None
    assert time.monotonic() - start < 2.5


def _claim_in_thread(w: FakeWorker, wait: float) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["assignment"] = w.claim(wait)
        except Exception as exc:  # surfaced by the test
            out["error"] = exc
        out["at"] = time.monotonic()

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, out


def test_a_waiting_claim_gets_a_new_task_at_once(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    """Dispatch is pushed to the long poll, not paced by a poll interval."""
    w = worker(workers, srv, ks.w1)
    for _ in range(2):
        th, out = _claim_in_thread(w, wait=10)
        time.sleep(0.25)
        assert th.is_alive(), out  # nothing fits yet: the claim waits
        submitted = time.monotonic()
        t = submit(srv, ks.user, "pushed")
        th.join(10)
        assert "error" not in out, out
        a: Assignment = out["assignment"]
        assert a is not None and a.task.id == t.id
        latency = out["at"] - submitted
        assert latency < 0.4, f"assignment took {latency:.2f}s after the submit"


def test_claims_follow_priority_then_fifo(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    ids = {
        name: submit(srv, ks.user, name, priority=p).id
        for name, p in [("p3", 3), ("p7a", 7), ("p5", 5), ("p7b", 7), ("p10", 10)]
    }
    w = worker(workers, srv, ks.w1, batch_slots=10)
    got = [w.must_claim().task.id for _ in range(5)]
    assert got == [ids[n] for n in ("p10", "p7a", "p7b", "p5", "p3")]
    assert w.claim(0) is None


def test_gpu_matching(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    w = worker(workers, srv, ks.w1, gpus=[0, 1], gpu_type="A100", batch_slots=8)
    one = [submit(srv, ks.user, f"g{i}", gpu=1, gpu_type="A100").id for i in range(3)]
    a0, a1 = w.must_claim(), w.must_claim()
    assert [a0.task.id, a1.task.id] == one[:2]
    assert (a0.gpus, a1.gpus) == ([0], [1])
    assert w.claim(wait=0.3) is None  # the third waits for a GPU

    # A wrong type and too many GPUs never fit, even with every GPU free (and a higher priority).
    h100 = submit(srv, ks.user, "h100", gpu=1, gpu_type="H100", priority=10).id
    three = submit(srv, ks.user, "three", gpu=3, priority=10).id
    w.run_to(a0, "running", "collecting", "completed")
    a2 = w.must_claim()
    assert (a2.task.id, a2.gpus) == (one[2], [0])
    w.run_to(a1, "running", "failed", exit_code=1)
    w.run_to(a2, "running", "collecting", "completed")
    assert w.claim(wait=0.3) is None
    for tid in (h100, three):
        assert get_task(srv, ks.user, tid).status == "queued"

    # A worker without GPUs gets no GPU task, but takes a CPU task queued behind them.
    cpu_only = worker(workers, srv, ks.w2)
    cpu = submit(srv, ks.user, "cpu", priority=1).id
    a = cpu_only.must_claim()
    assert (a.task.id, a.gpus) == (cpu, [])


def test_batch_slots_limit_claims_until_a_task_ends(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1, batch_slots=1)
    first, second = submit(srv, ks.user, "s1").id, submit(srv, ks.user, "s2").id
    a = w.must_claim()
    assert a.task.id == first
    assert w.claim(wait=0.3) is None
    w.run_to(a, "running", "collecting")
    assert w.claim(wait=0) is None  # collecting still holds the slot
    th, out = _claim_in_thread(w, wait=10)
    time.sleep(0.25)
    assert th.is_alive()
    ended = time.monotonic()
    w.report(a, "completed", exit_code=0)
    th.join(10)
    assert out["assignment"].task.id == second
    assert out["at"] - ended < 0.4, "a freed slot should wake the waiting claim"


# --- a last report with the next claim ----------------------------------------------------------


def test_a_last_report_claims_the_next_task_in_one_request(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1, batch_slots=1)
    first, second = submit(srv, ks.user, "e1").id, submit(srv, ks.user, "e2").id
    a = w.must_claim()
    w.report(a, "running")
    nxt = w.end_and_claim(a, "completed", exit_code=0, output="done")
    assert nxt is not None and nxt.task.id == second and nxt.attempt == 1
    done = get_task(srv, ks.user, first)
    assert (done.status, done.exit_code, done.output, done.error) == ("completed", 0, "done", None)
    [ev] = audit_events(srv, ks.admin, "job_completed", first)
    assert ev["success"] is True and ev["metadata"]["exit_code"] == 0
    placed = get_task(srv, ks.user, second)
    assert (placed.status, placed.worker_id) == ("preparing", w.name)
    # A failure ends the same way, and with nothing queued the claim answers 204.
    w.report(nxt, "running")
    assert w.end_and_claim(nxt, "failed", exit_code=3, error="boom") is None
    failed = get_task(srv, ks.user, second)
    assert (failed.status, failed.exit_code, failed.error) == ("failed", 3, "boom")


def test_a_refused_last_report_claims_nothing(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    """The report goes first, in the claim's transaction: refused, it takes the claim with it."""
    w = worker(workers, srv, ks.w1, batch_slots=1)
    other = worker(workers, srv, ks.w2, batch_slots=1)
    t = submit(srv, ks.user, "r1").id
    a = w.must_claim()
    w.report(a, "running")
    waiting = submit(srv, ks.user, "r2").id
    claim = f"/v1/workers/{w.name}/claim"

    def ended(**kw: Any) -> dict[str, Any]:
        return {"ended": {"task_id": t, "attempt": 1, "status": "completed", "exit_code": 0, **kw}}

    expect_error(post(srv, w.key, claim, ended(attempt=2), params={"wait": 0}), 409, "CONFLICT")
    expect_error(post(srv, w.key, claim, ended(task_id="no-such-task"), params={"wait": 0}), 404, "NOT_FOUND")
    # Another worker's key claims for its own name, but the report is about w's attempt.
    expect_error(
        post(srv, other.key, f"/v1/workers/{other.name}/claim", ended(), params={"wait": 0}), 403, "FORBIDDEN"
    )
    for bad in ({"status": "running"}, {"attempt": 0}, {"task_id": ""}, {"exit_code": "0"}):
        expect_error(post(srv, w.key, claim, ended(**bad), params={"wait": 0}), 422, "VALIDATION_ERROR")
    expect_error(post(srv, w.key, claim, {"ended": "x"}, params={"wait": 0}), 422, "VALIDATION_ERROR")
    expect_error(
        post(srv, w.key, claim, ended(), params={"wait": -1}), 400, "BAD_REQUEST"
    )  # a bad parameter is still a 400
    # Nothing changed: the attempt still runs and the other task is still queued.
    assert get_task(srv, ks.user, t).status == "running"
    assert get_task(srv, ks.user, waiting).status == "queued"
    assert audit_events(srv, ks.admin, "job_completed", t) == []
    # An empty body, or one without a report, is a plain claim (the slot is taken: 204).
    assert post(srv, w.key, claim, {}, params={"wait": 0}).status_code == 204
    assert post(srv, w.key, claim, {"ended": None}, params={"wait": 0}).status_code == 204
    nxt = w.end_and_claim(a, "completed", exit_code=0)
    assert nxt is not None and nxt.task.id == waiting


def test_registration_says_the_claim_takes_a_report(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = FakeWorker(srv, ks.w1)
    workers.append(w)
    answer = w.register()
    assert answer.claim_takes_report is True and answer.report_takes_started is True


def test_an_end_that_says_started_stands_for_the_running_report(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    """A process that ended before its running report went out is reported once: its end says
    `started`, and from preparing the task starts (stamped, audited) and ends in one transaction.
    Without `started`, an end from preparing is a failure before any start, as before."""
    w = worker(workers, srv, ks.w1, batch_slots=1)
    done_id, failed_id, unstarted_id, after_id = (submit(srv, ks.user, f"once-{i}").id for i in range(4))
    a = w.must_claim()
    done = w.report(a, "completed", exit_code=0, output="quick", started=True)
    assert (done.status, done.exit_code, done.output) == ("completed", 0, "quick")
    assert done.started_at is not None and done.started_at == done.ended_at
    [started] = audit_events(srv, ks.admin, "job_started", done_id)
    assert started["metadata"]["worker_id"] == w.name
    [ended] = audit_events(srv, ks.admin, "job_completed", done_id)
    assert ended["success"] is True
    # With the claim for the next task, and for a failure, alike.
    b = w.must_claim()
    c = w.end_and_claim(b, "failed", exit_code=3, started=True)
    assert c is not None and c.task.id == unstarted_id
    failed = get_task(srv, ks.user, failed_id)
    assert (failed.status, failed.exit_code, failed.error) == ("failed", 3, "exit code 3")
    assert failed.started_at is not None and len(audit_events(srv, ks.admin, "job_started", failed_id)) == 1
    # A failure before the process started (say, its workspace could not be made): no start.
    never = w.report(c, "failed", error="workspace: no space")
    assert (never.status, never.started_at, never.error) == ("failed", None, "workspace: no space")
    assert audit_events(srv, ks.admin, "job_started", unstarted_id) == []
    # `started` with running is a plain running report; a stale one is still a 409.
    d = w.must_claim()
    assert d.task.id == after_id
    running = w.report(d, "running", started=True)
    assert running.status == "running" and running.started_at is not None
    expect_error(
        post(
            srv, w.key, f"/v1/tasks/{done_id}/report", {"attempt": 1, "status": "completed", "started": True}
        ),
        409,
        "CONFLICT",
    )
    assert len(audit_events(srv, ks.admin, "job_started", after_id)) == 1
    assert srv.task_transitions(done_id)[-1] == ("preparing", "completed")


# --- report: the state machine ----------------------------------------------------------------


def test_report_walks_the_state_machine(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "happy")
    a = w.must_claim()
    assert a.task.status == "preparing" and a.lease_expires_at > utcnow()
    task = get_task(srv, ks.user, t.id)
    assert (task.status, task.worker_id, task.attempt, task.started_at) == ("preparing", w.name, 1, None)

    running = w.report(a, "running")
    assert running.status == "running" and running.started_at is not None and running.ended_at is None
    assert w.report(a, "running").status == "running"  # a repeat only renews the lease
    assert w.report(a, "collecting").status == "collecting"
    done = w.report(a, "completed", exit_code=0, output="loss 0.01")
    assert (done.status, done.exit_code, done.error, done.output) == ("completed", 0, None, "loss 0.01")
    assert done.ended_at is not None and done.started_at is not None and done.ended_at >= done.started_at
    assert get_task(srv, ks.user, t.id).model_dump() == done.model_dump()

    # Terminal: no further report is accepted.
    r = post(srv, w.key, f"/v1/tasks/{t.id}/report", {"attempt": 1, "status": "running"})
    expect_error(r, 409, "CONFLICT")
    assert len(audit_events(srv, ks.admin, "job_started", t.id)) == 1
    [completed] = audit_events(srv, ks.admin, "job_completed", t.id)
    assert completed["success"] is True and completed["metadata"]["exit_code"] == 0


def test_completed_straight_from_running_passes_through_collecting(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    """A worker with no outputs to upload skips the collecting report: the task passes through
    collecting in the same transaction, and its end reads as any other's."""
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "no-outputs")
    a = w.must_claim()
    w.report(a, "running")
    done = w.report(a, "completed", exit_code=0, output="ok")
    assert (done.status, done.exit_code, done.error, done.output) == ("completed", 0, None, "ok")
    assert done.ended_at is not None and done.started_at is not None
    [completed] = audit_events(srv, ks.admin, "job_completed", t.id)
    assert completed["success"] is True and completed["metadata"]["exit_code"] == 0
    moves = srv.task_transitions(t.id)
    assert ("running", "completed") in moves and ("running", "collecting") not in moves


def test_failed_report_names_the_exit_code(srv: ServerHandle, ks: K, workers: list[FakeWorker]) -> None:
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "crash")
    a = w.must_claim()
    w.report(a, "running")
    failed = w.report(a, "failed", exit_code=3)
    assert (failed.status, failed.exit_code) == ("failed", 3)
    assert failed.error is not None and "3" in failed.error and "exit code" in failed.error
    [ev] = audit_events(srv, ks.admin, "job_completed", t.id)
    assert ev["success"] is False and ev["error"] == failed.error


def test_illegal_transitions_stale_attempts_and_other_workers(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "strict")
    a = w.must_claim()
    path = f"/v1/tasks/{t.id}/report"
    expect_error(
        post(srv, w.key, path, {"attempt": 1, "status": "collecting"}), 409, "CONFLICT"
    )  # preparing->collecting
    # Never completed without having run (running -> completed is legal: nothing to collect).
    err = expect_error(post(srv, w.key, path, {"attempt": 1, "status": "completed"}), 409, "CONFLICT")
    assert "preparing" in err["error"] and "completed" in err["error"]
    w.report(a, "running")
    expect_error(post(srv, w.key, path, {"attempt": 2, "status": "collecting"}), 409, "CONFLICT")
    expect_error(post(srv, w.key, path, {"attempt": 0, "status": "collecting"}), 422, "VALIDATION_ERROR")
    expect_error(post(srv, w.key, path, {"attempt": 1, "status": "queued"}), 422, "VALIDATION_ERROR")
    for bad in (
        {"attempt": True},
        {"attempt": "1"},
        {"attempt": 1, "node_rank": "0"},
        {"attempt": 1, "exit_code": 1.0},
    ):
        expect_error(post(srv, w.key, path, {"status": "collecting", **bad}), 422, "VALIDATION_ERROR")
    expect_error(post(srv, ks.w2, path, {"attempt": 1, "status": "collecting"}), 403, "FORBIDDEN")
    expect_error(post(srv, ks.user, path, {"attempt": 1, "status": "collecting"}), 403, "FORBIDDEN")
    expect_error(
        post(srv, w.key, "/v1/tasks/no-such-task/report", {"attempt": 1, "status": "running"}),
        404,
        "NOT_FOUND",
    )
    # None of that changed anything.
    task = get_task(srv, ks.user, t.id)
    assert (task.status, task.attempt, task.worker_id) == ("running", 1, w.name)
    # An admin key may act for any worker.
    assert post(srv, ks.admin, path, {"attempt": 1, "status": "collecting"}).json()["status"] == "collecting"


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_of_a_running_task_goes_through_its_worker(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1)
    t = submit(srv, ks.user, "to-cancel")
    a = w.must_claim()
    w.report(a, "running")
    assert w.heartbeat(a).commands == []

    with srv.http(ks.user) as http:
        assert http.delete(f"/v1/tasks/{t.id}").status_code == 204
        assert http.delete(f"/v1/tasks/{t.id}").status_code == 204  # asking twice is fine
    task = get_task(srv, ks.user, t.id)
    assert (task.status, task.cancel_requested) == ("running", True)

    hb = w.heartbeat(a)
    assert [(c.type, c.task_id, c.attempt) for c in hb.commands] == [("cancel", t.id, 1)]
    ended = w.report(a, "failed", exit_code=143)
    assert (ended.status, ended.error, ended.exit_code) == ("failed", "cancelled", 143)
    assert w.heartbeat().commands == []
    assert len(audit_events(srv, ks.admin, "job_cancelled", t.id)) == 1


# --- heartbeats, leases, retries (2 s leases) -------------------------------------------------


def _lease(srv: ServerHandle, task_id: str) -> str | None:
    return srv.db_exec("SELECT lease_expires_at FROM tasks WHERE id = ?", (task_id,))[0][0]


def test_lost_lease_requeues_and_fences_the_old_attempt(
    fast: ServerHandle, fks: K, workers: list[FakeWorker]
) -> None:
    w1 = worker(workers, fast, fks.w1)
    w2 = worker(workers, fast, fks.w2)
    reg = w1.register()
    assert (reg.heartbeat_interval, reg.heartbeat_timeout) == (0.5, FAST_LEASE)
    t = submit(fast, fks.user, "leased", max_retries=2)
    a1 = w1.must_claim()
    w1.report(a1, "running")
    w1.log(a1, 0, ["attempt one"])

    # Heartbeats renew the lease: held well past the timeout (sweeps run meanwhile).
    first_lease = _lease(fast, t.id)

    def beat_w1() -> None:
        assert w1.heartbeat(a1).status == "active"

    pass_time(fast, FAST_LEASE * 2.5, beat_w1, w2.heartbeat)
    wait_sweeps(fast)
    task = get_task(fast, fks.user, t.id)
    assert (task.status, task.attempt, task.worker_id) == ("running", 1, w1.name)
    assert (_lease(fast, t.id) or "") > (first_lease or "")

    # w1 goes silent (w2 keeps beating): the lease runs out and the task goes back to the queue.
    pass_time(fast, FAST_LEASE + 1, w2.heartbeat)
    wait_until(lambda: get_task(fast, fks.user, t.id).status == "queued", 10.0, tick=w2.heartbeat)
    task = get_task(fast, fks.user, t.id)
    assert (task.retry_count, task.worker_id, task.started_at, task.assigned_gpus) == (1, None, None, [])

    a2 = w2.must_claim()
    assert (a2.task.id, a2.attempt, a2.task.retry_count) == (t.id, 2, 1)

    # w1 comes back late: its attempt is fenced off.
    r = post(fast, w1.key, f"/v1/tasks/{t.id}/report", {"attempt": 1, "status": "collecting"})
    expect_error(r, 409, "CONFLICT")
    r = post(fast, w1.key, f"/v1/tasks/{t.id}/logs", {"attempt": 1, "start_line": 1, "lines": ["late"]})
    expect_error(r, 409, "CONFLICT")
    hb = w1.heartbeat(a1)
    assert (hb.status, hb.commands) == ("offline", [])
    [(status,)] = fast.db_exec("SELECT status FROM workers WHERE id = ?", (w1.name,))
    assert status == "offline"
    assert w1.claim(wait=0) is None  # an offline worker gets nothing until it registers again

    w2.run_to(a2, "running", "collecting", "completed")
    done = get_task(fast, fks.user, t.id)
    assert (done.status, done.attempt, done.retry_count, done.worker_id) == ("completed", 2, 1, w2.name)
    started = audit_events(fast, fks.admin, "job_started", t.id)
    assert sorted(e["metadata"]["attempt"] for e in started) == [1, 2]
    [completed] = audit_events(fast, fks.admin, "job_completed", t.id)
    assert completed["success"] is True and completed["metadata"]["attempt"] == 2
    requeued = [e for e in audit_events(fast, fks.admin, "job_queued", t.id) if e["action"] == "requeue"]
    assert len(requeued) == 1 and requeued[0]["metadata"]["retry_count"] == 1

    # The name of a worker that is gone may be taken over by another key (a machine rebuilt
    # with a new key); the old key loses it.
    successor = FakeWorker(fast, fks.w2, name=w1.name)
    workers.append(successor)
    assert successor.register().lost_tasks == []
    assert successor.heartbeat().status == "active"
    with pytest.raises(ForbiddenError):
        w1.heartbeat()


def test_lost_lease_without_retries_fails_as_worker_lost(
    fast: ServerHandle, fks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, fast, fks.w1)
    t = submit(fast, fks.user, "no-retry", max_retries=0)
    a = w.must_claim()
    w.report(a, "running")
    fast.advance_clock(FAST_LEASE - 2)
    wait_sweeps(fast)
    assert get_task(fast, fks.user, t.id).status == "running"  # not before the lease ran out
    fast.advance_clock(3)
    wait_until(lambda: get_task(fast, fks.user, t.id).status != "running", 10.0)
    task = get_task(fast, fks.user, t.id)
    assert (task.status, task.error, task.retry_count) == ("failed", "worker lost", 0)
    assert task.ended_at is not None
    assert w.heartbeat(a).status == "offline"
    [ev] = audit_events(fast, fks.admin, "job_completed", t.id)
    assert (ev["success"], ev["error"]) == (False, "worker lost")
    # Its late log lines are refused too: the attempt is over.
    with pytest.raises(ConflictError):
        w.log(a, 0, ["too late"])
    # Registering again brings the worker back.
    assert w.register().lost_tasks == []
    assert w.heartbeat().status == "active"


def test_cancelled_task_of_a_lost_worker_fails_as_cancelled(
    fast: ServerHandle, fks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, fast, fks.w1)
    t = submit(fast, fks.user, "cancel-lost", max_retries=3)
    a = w.must_claim()
    with fast.http(fks.user) as http:
        assert http.delete(f"/v1/tasks/{t.id}").status_code == 204
    fast.advance_clock(FAST_LEASE + 1)
    wait_until(lambda: get_task(fast, fks.user, t.id).status == "failed", 10.0)
    task = get_task(fast, fks.user, t.id)
    assert (task.error, task.retry_count) == ("cancelled", 0)
    with pytest.raises(ConflictError):
        w.report(a, "running")


def test_worker_errors_reach_the_client_as_typed_exceptions(
    srv: ServerHandle, ks: K, workers: list[FakeWorker]
) -> None:
    w = worker(workers, srv, ks.w1)
    other = FakeWorker(srv, ks.w2, name=w.name)
    workers.append(other)
    with pytest.raises(ConflictError):
        other.register()
    with pytest.raises(ForbiddenError):
        other.heartbeat()
    ghost = FakeWorker(srv, ks.w2, name=unique("ghost"))
    workers.append(ghost)
    with pytest.raises(NotFoundError):
        ghost.heartbeat()
