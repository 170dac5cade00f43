"""Jupyter services through the API and the worker protocol's service half, driven by a
protocol-level worker (the real Jupyter servers run in tests/e2e/test_jupyter_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fetchml.core.jupyter import ServiceReport, proxy_path
from tests.harness import Keys, ServerHandle, expect_error, make_keys
from tests.protocol_kit import FakeWorker, cancel_leftovers, submit, unique


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
        FETCHML_HEARTBEAT_TIMEOUT="5",
        FETCHML_SWEEP_INTERVAL="0.2",
        FETCHML_JUPYTER_MAX_SERVICES_PER_USER="4",
    )


@pytest.fixture(scope="module")
def keys(srv: ServerHandle) -> Keys:
    return make_keys(srv)


def _stop_all(srv: ServerHandle, admin: str) -> None:
    with srv.http(admin) as http:
        for s in http.get("/v1/jupyter/services").json():
            if s["status"] in ("starting", "running"):
                http.delete(f"/v1/jupyter/services/{s['id']}")


@pytest.fixture
def clean(srv: ServerHandle, keys: Keys) -> Iterator[None]:
    yield
    _stop_all(srv, keys.admin)
    cancel_leftovers(srv, keys.admin)


@pytest.fixture
def box(srv: ServerHandle, keys: Keys, clean: None) -> Iterator[FakeWorker]:
    w = FakeWorker(srv, keys.worker)
    w.register(gpus=[0, 1], gpu_type=unique("J"), batch_slots=2, service_slots=1)
    yield w
    _stop_all(srv, keys.admin)
    with srv.http(keys.admin) as http:
        http.delete(f"/v1/scheduler/workers/{w.name}")
    w.close()


def start(srv: ServerHandle, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique("nb"))
    with srv.http(key) as http:
        r = http.post("/v1/jupyter/services", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def get(srv: ServerHandle, key: str, sid: str) -> dict[str, Any]:
    with srv.http(key) as http:
        r = http.get(f"/v1/jupyter/services/{sid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def claim(w: FakeWorker, running: list[str] | None = None, wait: float = 0.0) -> Any:
    return w.client.jupyter_workers.claim(w.name, running or [], wait)


def run(w: FakeWorker, sid: str, port: int = 9) -> str:
    url = f"http://127.0.0.1:{port}{proxy_path(sid)}"
    w.client.jupyter_workers.report(w.name, sid, ServiceReport(status="running", url=url))
    return url


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "a b"},
        {"name": "../x"},
        {"name": "ok", "workspace": "../etc"},
        {"name": "ok", "gpu": -1},
        {"name": "ok", "gpu": "1"},
        {"name": "ok", "idle_timeout_minutes": -5},
        {"name": "ok", "image": ""},
        {"name": "x" * 65},
    ],
)
def test_bad_bodies_are_422(srv: ServerHandle, keys: Keys, body: dict[str, Any]) -> None:
    with srv.http(keys.user) as http:
        expect_error(http.post("/v1/jupyter/services", json=body), 422, "VALIDATION_ERROR")
        assert not [s for s in http.get("/v1/jupyter/services").json() if s["name"] == "ok"]


def test_a_queued_service_says_why_and_stops_at_once(
    srv: ServerHandle, keys: Keys, clean: None
) -> None:
    s = start(srv, keys.user, gpu=7, gpu_type=unique("none"))
    assert s["status"] == "starting"
    assert s["token"] and "url" not in s
    assert s["proxy_path"] == f"/v1/jupyter/services/{s['id']}/proxy/"
    assert s["workspace"] == s["name"] and s["idle_timeout_minutes"] == 120
    assert s["pending_reason"] in ("no active workers", "no worker can ever fit this: no workers") or (
        "no worker can ever fit this" in s["pending_reason"]
    )
    with srv.http(keys.user) as http:
        assert http.delete(f"/v1/jupyter/services/{s['id']}").status_code == 204
        got = http.get(f"/v1/jupyter/services/{s['id']}").json()
        assert got["status"] == "stopped" and got["stop_reason"] == "stop" and "token" not in got
        expect_error(http.delete(f"/v1/jupyter/services/{s['id']}"), 409, "CONFLICT")
        expect_error(http.delete("/v1/jupyter/services/nope"), 404, "NOT_FOUND")
        expect_error(http.get("/v1/jupyter/services/nope"), 404, "NOT_FOUND")


def test_owners_see_their_own_admins_everything(srv: ServerHandle, keys: Keys, clean: None) -> None:
    a = start(srv, keys.user, gpu=9)
    b = start(srv, keys.other, gpu=9)
    with srv.http(keys.other) as http:
        ids = {s["id"] for s in http.get("/v1/jupyter/services").json()}
        assert b["id"] in ids and a["id"] not in ids
        expect_error(http.get(f"/v1/jupyter/services/{a['id']}"), 403, "FORBIDDEN")
        expect_error(http.delete(f"/v1/jupyter/services/{a['id']}"), 403, "FORBIDDEN")
        expect_error(http.get(f"/v1/jupyter/services/{a['id']}/proxy/api/status"), 403, "FORBIDDEN")
    with srv.http(keys.admin) as http:
        ids = {s["id"] for s in http.get("/v1/jupyter/services").json()}
        assert {a["id"], b["id"]} <= ids
        assert http.get(f"/v1/jupyter/services/{a['id']}").json()["token"] == a["token"]
    with srv.http(keys.worker) as http:
        expect_error(http.get("/v1/jupyter/services"), 403, "FORBIDDEN")
        expect_error(http.post("/v1/jupyter/services", json={"name": "w"}), 403, "FORBIDDEN")
    with srv.http() as http:
        expect_error(http.get("/v1/jupyter/services"), 401, "UNAUTHORIZED")


def test_names_are_unique_per_user_and_the_count_is_capped(
    srv: ServerHandle, keys: Keys, clean: None
) -> None:
    name = unique("dup")
    start(srv, keys.user, name=name, gpu=9)
    start(srv, keys.other, name=name, gpu=9)  # another user's name is theirs
    with srv.http(keys.user) as http:
        expect_error(http.post("/v1/jupyter/services", json={"name": name}), 409, "CONFLICT")
        for _ in range(3):
            start(srv, keys.user, gpu=9)
        err = expect_error(http.post("/v1/jupyter/services", json={"name": unique("n")}), 409, "CONFLICT")
        assert "limit is 4" in err["error"]


def test_start_run_stop_through_the_worker_protocol(
    srv: ServerHandle, keys: Keys, box: FakeWorker
) -> None:
    s = start(srv, keys.user, gpu=1, cpu=2, memory_gb=4)
    got = claim(box, wait=5)
    assert [a.id for a in got.start] == [s["id"]] and not got.stop
    a = got.start[0]
    assert a.token == s["token"] and a.base_url == s["proxy_path"] and len(a.gpus) == 1
    assert a.user_id == "alice" and a.workspace == s["name"]
    assert not claim(box, [a.id]).start  # delivered once
    placed = get(srv, keys.user, s["id"])
    assert placed["status"] == "starting" and placed["worker_id"] == box.name and "pending_reason" not in placed
    url = run(box, a.id)
    mine = get(srv, keys.user, s["id"])
    assert mine["status"] == "running" and mine["url"] == url and mine["started_at"]
    with srv.http(keys.admin) as http:
        slots = http.get(f"/v1/scheduler/workers/{box.name}").json()["slots"]
        assert slots["service_total"] == 1 and slots["service_available"] == 0
    with srv.http(keys.user) as http:
        assert http.delete(f"/v1/jupyter/services/{a.id}").status_code == 204
        assert http.get(f"/v1/jupyter/services/{a.id}").json()["status"] == "stopping"
        assert http.delete(f"/v1/jupyter/services/{a.id}").status_code == 204  # repeated: no change
    assert claim(box, [a.id], wait=5).stop == [a.id]
    box.client.jupyter_workers.report(box.name, a.id, ServiceReport(status="stopped"))
    done = get(srv, keys.user, s["id"])
    assert done["status"] == "stopped" and done["ended_at"] and "url" not in done
    with srv.http(keys.admin) as http:
        assert http.get(f"/v1/scheduler/workers/{box.name}").json()["slots"]["service_available"] == 1
        events = [
            e
            for e in http.get("/v1/audit/events", params={"include_extended": "true", "limit": 1000}).json()["events"]
            if e.get("resource") == f"jupyter:{a.id}"
        ]
    assert [(e["event_type"], e["action"]) for e in reversed(events)] == [
        ("jupyter_started", "start"),
        ("jupyter_stopped", "stop"),
        ("jupyter_stopped", "stopped"),
    ]
    assert s["token"] not in str(events)


def test_a_service_waits_for_a_slot_and_starts_when_one_frees(
    srv: ServerHandle, keys: Keys, box: FakeWorker
) -> None:
    first = start(srv, keys.user)
    second = start(srv, keys.other)
    got = claim(box, wait=5)
    assert [x.id for x in got.start] == [first["id"]]
    waiting = get(srv, keys.other, second["id"])
    assert waiting["status"] == "starting" and "service slot" in waiting["pending_reason"]
    with srv.http(keys.admin) as http:
        assert http.get("/v1/scheduler/status").json()["service_queue_depth"] >= 1
    box.client.jupyter_workers.report(box.name, first["id"], ServiceReport(status="error", error="boom", log_tail=["a", "b"]))
    failed = get(srv, keys.user, first["id"])
    assert failed["status"] == "error" and failed["error"] == "boom" and failed["log_tail"] == ["a", "b"]
    got = claim(box, wait=5)
    assert [x.id for x in got.start] == [second["id"]]


def test_service_gpus_are_held_from_batch_tasks(srv: ServerHandle, keys: Keys, box: FakeWorker) -> None:
    s = start(srv, keys.user, gpu=2)
    assert [x.id for x in claim(box, wait=5).start] == [s["id"]]
    task = submit(srv, keys.user, gpu=1)
    assert box.claim(0) is None  # both GPUs are the service's
    with srv.http(keys.user) as http:
        reason = http.get(f"/v1/tasks/{task.id}").json().get("pending_reason", "")
        assert "GPU" in reason, reason
        assert http.delete(f"/v1/jupyter/services/{s['id']}").status_code == 204
    box.client.jupyter_workers.report(box.name, s["id"], ServiceReport(status="stopped"))
    a = box.must_claim(5)
    assert a.task.id == task.id


def test_reports_are_fenced_to_the_holding_worker(srv: ServerHandle, keys: Keys, box: FakeWorker) -> None:
    s = start(srv, keys.user)
    assert claim(box, wait=5).start
    other = FakeWorker(srv, keys.worker)
    other.register(service_slots=1)
    try:
        with pytest.raises(Exception) as exc:
            other.client.jupyter_workers.report(other.name, s["id"], ServiceReport(status="running", url="http://x/"))
        assert "not held by" in str(exc.value)
        with pytest.raises(Exception) as exc2:  # another worker's name with this key
            other.client.jupyter_workers.claim(box.name, [], 0)
        assert "may act only" in str(exc2.value)
    finally:
        with srv.http(keys.admin) as http:
            http.delete(f"/v1/scheduler/workers/{other.name}")
        other.close()
    with srv.http(keys.user) as http:
        http.delete(f"/v1/jupyter/services/{s['id']}")
    # Ended: a report is 409 and the worker is told to stop it at its next claim.
    box.client.jupyter_workers.report(box.name, s["id"], ServiceReport(status="stopped"))
    with pytest.raises(Exception) as exc3:
        run(box, s["id"])
    assert "no longer live" in str(exc3.value)
    assert claim(box, [s["id"]]).stop == [s["id"]]


def test_a_restarted_worker_turns_its_services_to_error(
    srv: ServerHandle, keys: Keys, box: FakeWorker
) -> None:
    s = start(srv, keys.user)
    assert claim(box, wait=5).start
    run(box, s["id"])
    box.register(service_slots=1)
    got = get(srv, keys.user, s["id"])
    assert got["status"] == "error" and "restarted" in got["error"] and got["stop_reason"] == "worker_restarted"


def test_a_lost_worker_turns_its_services_to_error(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(FETCHML_HEARTBEAT_TIMEOUT="2", FETCHML_SWEEP_INTERVAL="0.1")
    user = srv.make_key("alice", "user")
    w = FakeWorker(srv, srv.make_key("boxes", "worker"))
    w.register(service_slots=1)
    s = start(srv, user)
    assert claim(w, wait=5).start
    run(w, s["id"])
    srv.advance_clock(10)
    got: dict[str, Any] = {}
    for _ in range(100):  # bounded: the sweep runs every 0.1 s
        got = get(srv, user, s["id"])
        if got["status"] == "error":
            break
        import time

        time.sleep(0.1)
    assert got["status"] == "error" and "lost" in got["error"] and got["stop_reason"] == "worker_lost"
    w.close()


def test_an_idle_service_is_stopped_and_audited(server_factory: Callable[..., ServerHandle]) -> None:
    # 25 min: longer than each move of the clock below (the worker, heartbeating between them,
    # is never declared lost), shorter than their sum (the sweep, idle culling included, runs
    # only once the grace after the start has passed).
    srv = server_factory(FETCHML_HEARTBEAT_TIMEOUT="1500", FETCHML_SWEEP_INTERVAL="0.1")
    user = srv.make_key("alice", "user")
    admin = srv.make_key("root", "admin")
    w = FakeWorker(srv, srv.make_key("boxes", "worker"))
    w.register(service_slots=1)
    s = start(srv, user, idle_timeout_minutes=30)
    never = start(srv, user, idle_timeout_minutes=0)
    assert claim(w, wait=5).start
    run(w, s["id"])
    srv.advance_clock(20 * 60)
    w.heartbeat()
    import time

    time.sleep(0.5)
    assert get(srv, user, s["id"])["status"] == "running"
    srv.advance_clock(11 * 60)
    w.heartbeat()
    got: dict[str, Any] = {}
    for _ in range(100):
        got = get(srv, user, s["id"])
        if got["status"] == "stopping":
            break
        time.sleep(0.1)
    assert got["status"] == "stopping" and got["stop_reason"] == "idle_stop"
    assert claim(w, [s["id"]]).stop == [s["id"]]
    w.client.jupyter_workers.report(w.name, s["id"], ServiceReport(status="stopped"))
    assert get(srv, user, s["id"])["stop_reason"] == "idle_stop"
    assert get(srv, user, never["id"])["status"] == "starting"
    with srv.http(admin) as http:
        events = http.get("/v1/audit/events", params={"event_type": "jupyter_stopped", "limit": 1000}).json()
    actions = [e.get("action") for e in events["events"] if e.get("resource") == f"jupyter:{s['id']}"]
    assert actions == ["stopped", "idle_stop"], events
    w.close()
