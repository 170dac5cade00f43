"""Scheduler management over real HTTP: workers (list, details, drain), scheduler status, task
priority changes and priority aging. A test plays the workers by hand (tests/protocol_kit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from fetchml.core.aging import aged_priority
from fetchml.core.models import Task
from fetchml.core.timeutil import utcnow
from fetchml.host.settings import Settings
from tests.harness import ServerHandle, contract_fields, expect_error, sqlite_exec
from tests.protocol_kit import FakeWorker, cancel_leftovers, get_task, submit

# The contract's Worker and SchedulerStatus (openapi.yaml), field by field.
WORKER_FIELDS = contract_fields("Worker")
CAPABILITY_FIELDS = {"gpu_count", "gpu_type", "cpu_cores", "memory_gb"}
SLOT_FIELDS = {"batch_available", "batch_total", "service_available", "service_total"}
STATUS_FIELDS = contract_fields("SchedulerStatus")

AGING_CAP = 10.0  # the module server ages one point per second, up to this


class K:
    def __init__(self, srv: ServerHandle) -> None:
        self.admin = srv.make_key("root", "admin")
        self.alice = srv.make_key("alice", "user")
        self.bob = srv.make_key("bob", "user")
        self.worker = srv.make_key("box-1", "worker")


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
        FETCHML_PRIORITY_AGING_PER_HOUR="3600",  # +1 per second
        FETCHML_PRIORITY_AGING_CAP=str(AGING_CAP),
    )


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return K(srv)


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Claims take any queued task that fits: leave none behind for the next test."""
    yield
    if "ks" in request.fixturenames:
        cancel_leftovers(request.getfixturevalue("srv"), request.getfixturevalue("ks").admin)


@pytest.fixture
def workers(srv: ServerHandle, ks: K) -> Iterator[Callable[..., FakeWorker]]:
    made: list[FakeWorker] = []

    def make(**register: Any) -> FakeWorker:
        w = FakeWorker(srv, ks.worker)
        made.append(w)
        w.register(**register)
        return w

    yield make
    for w in made:
        w.close()


def http(srv: ServerHandle, key: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
    with srv.http(key) as c:
        return c.request(method, path, json=body)


def set_priority(srv: ServerHandle, key: str | None, task_id: str, body: Any) -> httpx.Response:
    return http(srv, key, "PATCH", f"/v1/scheduler/jobs/{task_id}/priority", body)


def audit(srv: ServerHandle, admin: str, event_type: str, resource: str) -> list[dict[str, Any]]:
    with srv.http(admin) as c:
        r = c.get("/v1/audit/events", params={"event_type": event_type, "limit": 1000})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["resource"] == resource]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- priority aging: the pure rule ---------------------------------------------------------------


def test_aged_priority_rule() -> None:
    assert aged_priority(5, 0.0, 1.0, 15.0) == 5.0
    assert aged_priority(5, 2.5, 1.0, 15.0) == 7.5
    assert aged_priority(5, 100.0, 1.0, 15.0) == 15.0  # capped
    assert aged_priority(9, 100.0, 1.0, 7.0) == 9.0  # a cap below the priority never lowers it
    assert aged_priority(5, -3.0, 1.0, 15.0) == 5.0  # clock skew counts as no wait
    assert aged_priority(5, 10.0, 0.0, 15.0) == 5.0  # rate 0: no aging
    defaults = Settings()
    assert (defaults.priority_aging_per_hour, defaults.priority_aging_cap) == (1.0, 15.0)
    for bad in ({"priority_aging_cap": 9.5}, {"priority_aging_per_hour": -1}, {"priority_aging_cap": "inf"}):
        with pytest.raises(ValueError):
            Settings(**bad)


# --- priority aging over HTTP ----------------------------------------------------------------------


def server_now(srv: ServerHandle) -> datetime:
    return utcnow() + timedelta(seconds=srv.clock_offset())


def test_priority_aged_grows_while_queued_and_is_capped(srv: ServerHandle, ks: K) -> None:
    t = submit(srv, ks.alice, "aging", priority=8)
    top = submit(srv, ks.alice, "aging-top", priority=10)
    assert 8.0 <= t.priority_aged < 9.0  # just created (real time moves too, at +1 per second)

    first = get_task(srv, ks.alice, t.id)
    srv.advance_clock(1.0)
    second = get_task(srv, ks.alice, t.id)
    # +1 per second of waiting, measured from created_at (plus the real time the requests took).
    grown = second.priority_aged - first.priority_aged
    assert 1.0 <= grown <= 1.6, (first.priority_aged, second.priority_aged)
    waited = (server_now(srv) - second.created_at).total_seconds()
    assert 9.0 <= second.priority_aged <= 8.0 + waited

    # The list shows the same effective priority.
    with srv.http(ks.alice) as c:
        page = c.get("/v1/tasks", params={"status": "queued", "limit": 1000}).json()
    listed = next(x for x in page["tasks"] if x["id"] == t.id)
    assert listed["priority"] == 8 and listed["priority_aged"] >= second.priority_aged

    # Past 2 s of waiting it stops at the cap, where a top-priority task already is.
    srv.advance_clock(1.2)
    assert get_task(srv, ks.alice, t.id).priority_aged == AGING_CAP
    assert get_task(srv, ks.alice, top.id).priority_aged == AGING_CAP
    srv.advance_clock(3600)  # and stays there
    assert get_task(srv, ks.alice, t.id).priority_aged == AGING_CAP


def test_only_queued_tasks_age(srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]) -> None:
    t = submit(srv, ks.alice, "aging-claimed", priority=1)
    srv.advance_clock(1.2)
    assert get_task(srv, ks.alice, t.id).priority_aged > 2.0
    w = workers()
    a = w.must_claim()
    assert a.task.id == t.id
    assert a.task.priority_aged == 1.0  # the assignment's Task
    assert get_task(srv, ks.alice, t.id).priority_aged == 1.0  # preparing
    srv.advance_clock(5)  # a placed task does not age on (within its lease)
    assert get_task(srv, ks.alice, t.id).priority_aged == 1.0
    done = w.run_to(a, "running", "collecting", "completed")
    assert done.priority_aged == 1.0
    assert get_task(srv, ks.alice, t.id).priority_aged == 1.0  # ended


# --- PATCH /v1/scheduler/jobs/{id}/priority --------------------------------------------------------


def test_owner_changes_priority_and_it_is_audited(srv: ServerHandle, ks: K) -> None:
    t = submit(srv, ks.alice, "reprio", priority=5)
    r = set_priority(srv, ks.alice, t.id, {"priority": 9})
    assert r.status_code == 200, r.text
    body = Task.model_validate(r.json())
    assert (body.id, body.priority, body.status.value) == (t.id, 9, "queued")
    assert body.priority_aged >= 9.0
    assert get_task(srv, ks.alice, t.id).priority == 9

    events = audit(srv, ks.admin, "priority_changed", f"task:{t.id}")
    assert len(events) == 1
    ev = events[0]
    assert ev["user_id"] == "alice" and ev["success"] is True and ev["action"] == "set_priority"
    assert ev["metadata"]["old_priority"] == 5 and ev["metadata"]["new_priority"] == 9
    assert ev["metadata"]["owner"] == "alice"

    # The same value again changes nothing and records nothing.
    assert set_priority(srv, ks.alice, t.id, {"priority": 9}).status_code == 200
    assert len(audit(srv, ks.admin, "priority_changed", f"task:{t.id}")) == 1

    # An admin may change anyone's task; the event names the admin.
    r = set_priority(srv, ks.admin, t.id, {"priority": 2})
    assert r.status_code == 200 and r.json()["priority"] == 2
    events = audit(srv, ks.admin, "priority_changed", f"task:{t.id}")
    assert [(e["user_id"], e["metadata"]["old_priority"], e["metadata"]["new_priority"]) for e in events] == [
        ("root", 9, 2),
        ("alice", 5, 9),
    ]
    with srv.http(ks.admin) as c:
        assert c.post("/v1/audit/verify").json()["valid"] is True


def test_priority_change_is_refused_to_others(srv: ServerHandle, ks: K) -> None:
    t = submit(srv, ks.alice, "reprio-guarded", priority=5)
    expect_error(set_priority(srv, ks.bob, t.id, {"priority": 9}), 403, "FORBIDDEN")
    expect_error(set_priority(srv, ks.worker, t.id, {"priority": 9}), 403, "FORBIDDEN")
    expect_error(set_priority(srv, None, t.id, {"priority": 9}), 401, "UNAUTHORIZED")
    assert get_task(srv, ks.alice, t.id).priority == 5
    assert audit(srv, ks.admin, "priority_changed", f"task:{t.id}") == []
    # An unknown id is 404 for a user and an admin alike.
    expect_error(set_priority(srv, ks.alice, "no-such-task", {"priority": 9}), 404, "NOT_FOUND")
    expect_error(set_priority(srv, ks.admin, "no-such-task", {"priority": 9}), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"priority": 0},
        {"priority": 11},
        {"priority": -1},
        {"priority": "x"},
        {"priority": "5"},
        {"priority": 5.5},
        {"priority": True},
        {"priority": None},
        {},
        [5],
        None,
    ],
    ids=["0", "11", "-1", "x", "string-5", "5.5", "true", "null", "missing", "array", "no-body"],
)
def test_out_of_range_or_malformed_priority_is_422(srv: ServerHandle, ks: K, body: Any) -> None:
    t = submit(srv, ks.alice, "reprio-invalid", priority=5)
    err = expect_error(set_priority(srv, ks.alice, t.id, body), 422, "VALIDATION_ERROR")
    if isinstance(body, dict):
        assert "priority" in err["error"], err  # the message names the field
    assert get_task(srv, ks.alice, t.id).priority == 5


def test_finished_tasks_keep_their_priority(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]
) -> None:
    cancelled = submit(srv, ks.alice, "reprio-cancelled")
    with srv.http(ks.alice) as c:
        assert c.delete(f"/v1/tasks/{cancelled.id}").status_code == 204
    expect_error(set_priority(srv, ks.alice, cancelled.id, {"priority": 9}), 409, "CONFLICT")

    w = workers()
    t = submit(srv, ks.alice, "reprio-running", priority=4)
    a = w.must_claim()
    assert a.task.id == t.id
    w.report(a, "running")
    # A running task may still change (it matters if it is requeued).
    r = set_priority(srv, ks.alice, t.id, {"priority": 6})
    assert r.status_code == 200 and r.json()["priority"] == 6 and r.json()["status"] == "running"
    w.run_to(a, "collecting", "completed")
    expect_error(set_priority(srv, ks.admin, t.id, {"priority": 9}), 409, "CONFLICT")
    assert get_task(srv, ks.alice, t.id).priority == 6


def test_a_raised_priority_is_claimed_first(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]
) -> None:
    first = submit(srv, ks.alice, "fifo-first", priority=5)
    second = submit(srv, ks.alice, "fifo-second", priority=5)
    assert set_priority(srv, ks.alice, second.id, {"priority": 6}).status_code == 200
    w = workers(batch_slots=1)
    assert w.must_claim().task.id == second.id
    assert get_task(srv, ks.alice, first.id).status.value == "queued"


# --- GET /v1/scheduler/workers[/{id}] ---------------------------------------------------------------


def test_worker_list_and_details_have_every_contract_field(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]
) -> None:
    w = workers(cpu_cores=16, memory_gb=64, gpus=[0, 1], gpu_type="A100", batch_slots=3, hostname="box-1.lab")
    t = submit(srv, ks.alice, "gpu-job", gpu=1)
    a = w.must_claim()
    assert a.task.id == t.id

    r = http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info.keys() >= WORKER_FIELDS
    assert info["capabilities"].keys() >= CAPABILITY_FIELDS and info["slots"].keys() >= SLOT_FIELDS
    assert info["id"] == w.name and info["status"] == "active"
    caps = info["capabilities"]
    assert (caps["gpu_count"], caps["gpu_type"], caps["cpu_cores"], caps["memory_gb"]) == (2, "A100", 16, 64)
    assert caps["hostname"] == "box-1.lab"
    assert info["slots"] == {
        "batch_total": 3,
        "batch_available": 2,
        "service_total": 0,
        "service_available": 0,
    }
    assert info["active_tasks"] == [t.id]
    before = ts(info["last_heartbeat"])
    assert ts(info["connected_at"]) <= before

    srv.advance_clock(1.0)
    w.heartbeat(a)
    after = http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()
    assert ts(after["last_heartbeat"]) >= before + timedelta(seconds=1)

    listed = http(srv, ks.admin, "GET", "/v1/scheduler/workers").json()
    assert isinstance(listed, list) and all(x.keys() >= WORKER_FIELDS for x in listed)
    assert [x["id"] for x in listed] == sorted(x["id"] for x in listed)
    assert next(x for x in listed if x["id"] == w.name) == after

    # The typed client reads the same shapes.
    with srv.client(ks.admin) as c:
        assert w.name in [x.id for x in c.scheduler.workers()]
        got = c.scheduler.worker(w.name)
        assert got.active_tasks == [t.id] and got.slots.batch_available == 2

    w.run_to(a, "running", "collecting", "completed")
    done = http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()
    assert done["active_tasks"] == [] and done["slots"]["batch_available"] == 3


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/scheduler/status"),
        ("GET", "/v1/scheduler/workers"),
        ("GET", "/v1/scheduler/workers/{name}"),
        ("DELETE", "/v1/scheduler/workers/{name}"),
    ],
)
def test_scheduler_routes_are_admin_only(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker], method: str, path: str
) -> None:
    w = workers()
    url = path.format(name=w.name)
    expect_error(http(srv, None, method, url), 401, "UNAUTHORIZED")
    expect_error(http(srv, "fml_not-a-key", method, url), 401, "UNAUTHORIZED")
    expect_error(http(srv, ks.alice, method, url), 403, "FORBIDDEN")
    expect_error(http(srv, ks.worker, method, url), 403, "FORBIDDEN")  # even the worker's own key
    assert http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()["status"] == "active"
    assert audit(srv, ks.admin, "scheduler_drain", f"worker:{w.name}") == []


def test_unknown_worker_is_404(srv: ServerHandle, ks: K) -> None:
    expect_error(http(srv, ks.admin, "GET", "/v1/scheduler/workers/no-such-worker"), 404, "NOT_FOUND")
    expect_error(http(srv, ks.admin, "DELETE", "/v1/scheduler/workers/no-such-worker"), 404, "NOT_FOUND")
    assert audit(srv, ks.admin, "scheduler_drain", "worker:no-such-worker") == []


# --- DELETE /v1/scheduler/workers/{id}: drain ------------------------------------------------------


def test_drain_lets_running_tasks_finish_then_goes_offline(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]
) -> None:
    w = workers(batch_slots=4)
    t = submit(srv, ks.alice, "drain-running")
    a = w.must_claim()
    assert a.task.id == t.id
    w.report(a, "running")

    r = http(srv, ks.admin, "DELETE", f"/v1/scheduler/workers/{w.name}")
    assert r.status_code == 204 and r.content == b""
    info = http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()
    assert info["status"] == "draining" and info["active_tasks"] == [t.id]

    events = audit(srv, ks.admin, "scheduler_drain", f"worker:{w.name}")
    assert len(events) == 1
    ev = events[0]
    assert ev["user_id"] == "root" and ev["action"] == "drain" and ev["success"] is True
    assert ev["metadata"] == {"previous_status": "active", "active_tasks": [t.id]}

    # Asking again is accepted and not audited twice.
    assert http(srv, ks.admin, "DELETE", f"/v1/scheduler/workers/{w.name}").status_code == 204
    assert len(audit(srv, ks.admin, "scheduler_drain", f"worker:{w.name}")) == 1

    # No new assignments, even with a free slot and a task that fits; a long poll ends empty.
    waiting = submit(srv, ks.alice, "drain-waiting")
    assert w.claim(0) is None
    assert w.claim(1.0) is None
    assert get_task(srv, ks.alice, waiting.id).status.value == "queued"

    # The heartbeat says drain, renews the running task's lease and keeps the worker draining.
    hb = w.heartbeat(a)
    assert hb.status.value == "draining" and hb.drain is True

    # Its running task finishes normally.
    done = w.run_to(a, "collecting", "completed")
    assert done.status.value == "completed"
    assert http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()["status"] == "draining"

    # The first heartbeat without tasks turns it offline (and still says drain).
    hb = w.heartbeat()
    assert hb.status.value == "offline" and hb.drain is True
    info = http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()
    assert info["status"] == "offline" and info["active_tasks"] == []
    assert w.claim(0) is None
    assert w.heartbeat().status.value == "offline"

    # An offline worker cannot be drained.
    expect_error(http(srv, ks.admin, "DELETE", f"/v1/scheduler/workers/{w.name}"), 409, "CONFLICT")
    assert len(audit(srv, ks.admin, "scheduler_drain", f"worker:{w.name}")) == 1

    # The waiting task was not lost: another worker runs it.
    other = workers()
    assert other.must_claim().task.id == waiting.id


def test_drain_of_an_idle_worker_goes_offline_at_its_next_heartbeat(
    srv: ServerHandle, ks: K, workers: Callable[..., FakeWorker]
) -> None:
    w = workers()
    with srv.client(ks.admin) as c:
        c.scheduler.drain(w.name)
        assert c.scheduler.worker(w.name).status.value == "draining"
    hb = w.heartbeat()
    assert hb.status.value == "offline" and hb.drain is True
    assert http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()["status"] == "offline"
    # Registering again brings it back.
    w.register()
    assert http(srv, ks.admin, "GET", f"/v1/scheduler/workers/{w.name}").json()["status"] == "active"


# --- GET /v1/scheduler/status ------------------------------------------------------------------------


def test_scheduler_status_counts(module_server_factory: Callable[..., ServerHandle]) -> None:
    """On a server of its own, so that every count is exact."""
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    ks = K(srv)

    def status() -> dict[str, Any]:
        r = http(srv, ks.admin, "GET", "/v1/scheduler/status")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == STATUS_FIELDS, body
        return body  # type: ignore[no-any-return]

    empty = status()
    assert {k: v for k, v in empty.items() if k != "timestamp"} == dict.fromkeys(
        STATUS_FIELDS - {"timestamp"}, 0
    )
    assert abs((ts(empty["timestamp"]) - utcnow()).total_seconds()) < 30

    w1, w2, w3 = (FakeWorker(srv, ks.worker) for _ in range(3))
    try:
        for w in (w1, w2, w3):
            w.register(batch_slots=8)
        submit(srv, ks.alice, "s-preparing")
        w1.must_claim()  # preparing
        submit(srv, ks.alice, "s-running")
        held = w2.must_claim()
        w2.report(held, "running")
        for name in ("s-done", "s-done-long-ago"):
            submit(srv, ks.alice, name)
            w1.run_to(w1.must_claim(), "running", "collecting", "completed")
        submit(srv, ks.alice, "s-failed")
        w1.run_to(w1.must_claim(), "running", "failed", exit_code=3)
        old = (utcnow() - timedelta(hours=25)).replace(tzinfo=None).isoformat(sep=" ")
        sqlite_exec(srv.db_path, "UPDATE tasks SET ended_at = ? WHERE job_name = 's-done-long-ago'", (old,))

        with srv.client(ks.admin) as c:
            c.scheduler.drain(w2.name)  # holds a running task: stays draining
            c.scheduler.drain(w3.name)
        assert w3.heartbeat().status.value == "offline"
        for name in ("s-queued-1", "s-queued-2"):
            submit(srv, ks.alice, name)

        body = status()
        assert {k: v for k, v in body.items() if k != "timestamp"} == {
            "workers_total": 3,
            "workers_active": 1,
            "workers_draining": 1,
            "batch_queue_depth": 2,
            "service_queue_depth": 0,
            "tasks_running": 2,
            "tasks_completed_24h": 1,
            "reservations_active": 0,
        }
        assert ts(body["timestamp"]) > ts(empty["timestamp"])

        # The typed client reads the same.
        with srv.client(ks.admin) as c:
            assert c.scheduler.status().tasks_running == 2
    finally:
        for w in (w1, w2, w3):
            w.close()
