"""Time limits on the server: `time_limit_minutes` of tasks and Jupyter services (validation, the
server's default and ceiling), the seconds a worker's assignment carries, a `time limit`
failure that is never retried, and the sweep stopping a Jupyter service past its limit. The
worker's own enforcement, with real processes: tests/e2e/test_time_limits_local.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fetchml.core.jupyter import ServiceReport, proxy_path
from tests.harness import Keys, ServerHandle, expect_error, post_task
from tests.protocol_kit import FakeWorker, cancel_leftovers, unique

DEFAULT, MAXIMUM, UNIT = 30, 600, 0.5


def post_service(srv: ServerHandle, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique("nb"))
    with srv.http(key) as http:
        r = http.post("/v1/jupyter/services", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


# --- on a server without time limit settings ------------------------------------------------


def test_a_task_keeps_its_limit_and_one_without_has_none(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.user, time_limit_minutes=90)
    assert t["time_limit_minutes"] == 90
    with shared_server.http(keys.other) as http:  # not a content field: the queue shows it
        assert http.get(f"/v1/tasks/{t['id']}").json()["time_limit_minutes"] == 90
    plain = post_task(shared_server, keys.user)
    assert "time_limit_minutes" not in plain  # absent, never null
    with shared_server.http(keys.user) as http:
        assert "time_limit_minutes" not in http.get(f"/v1/tasks/{plain['id']}").json()
        http.delete(f"/v1/tasks/{t['id']}")
        http.delete(f"/v1/tasks/{plain['id']}")


BAD_LIMITS = [0, -1, 525_601, "5", 1.5, True, None]


@pytest.mark.parametrize("value", BAD_LIMITS)
def test_bad_task_limits_are_422_naming_the_field(
    shared_server: ServerHandle, keys: Keys, value: Any
) -> None:
    with shared_server.http(keys.user) as http:
        before = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
        body = {"job_name": "tl", "time_limit_minutes": value}
        if value is None:  # explicit null is "no limit", not an error
            r = http.post("/v1/tasks", json=body)
            assert r.status_code == 201 and "time_limit_minutes" not in r.json(), r.text
            http.delete(f"/v1/tasks/{r.json()['id']}")
            return
        err = expect_error(http.post("/v1/tasks", json=body), 422, "VALIDATION_ERROR")
        assert "time_limit_minutes" in err["error"], err
        assert http.get("/v1/tasks", params={"limit": 1}).json()["total"] == before


@pytest.mark.parametrize("value", [v for v in BAD_LIMITS if v is not None])
def test_bad_service_limits_are_422_naming_the_field(
    shared_server: ServerHandle, keys: Keys, value: Any
) -> None:
    with shared_server.http(keys.user) as http:
        err = expect_error(
            http.post("/v1/jupyter/services", json={"name": unique("nb"), "time_limit_minutes": value}),
            422,
            "VALIDATION_ERROR",
        )
        assert "time_limit_minutes" in err["error"], err


def test_a_service_keeps_its_limit_and_one_without_has_none(shared_server: ServerHandle, keys: Keys) -> None:
    s = post_service(shared_server, keys.user, gpu=64, time_limit_minutes=480)
    plain = post_service(shared_server, keys.user, gpu=64)
    with shared_server.http(keys.user) as http:
        assert http.get(f"/v1/jupyter/services/{s['id']}").json()["time_limit_minutes"] == 480
        assert "time_limit_minutes" not in http.get(f"/v1/jupyter/services/{plain['id']}").json()
        for sid in (s["id"], plain["id"]):
            assert http.delete(f"/v1/jupyter/services/{sid}").status_code == 204


def test_the_schema_documents_the_field(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        schemas = http.get("/schema/openapi.json").json()["components"]["schemas"]
    for name in ("CreateTaskRequest", "StartJupyterRequest"):
        prop = schemas[name]["properties"]["time_limit_minutes"]
        text = str(prop)
        assert "525600" in text and "time-limits" in text, prop


# --- on a server with a default, a ceiling and a short minute ------------------------------


@pytest.fixture(scope="module")
def limited(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
        FETCHML_DEFAULT_TIME_LIMIT_MINUTES=str(DEFAULT),
        FETCHML_MAX_TIME_LIMIT_MINUTES=str(MAXIMUM),
        FETCHML_TIME_LIMIT_UNIT_SECONDS=str(UNIT),
    )


@pytest.fixture(scope="module")
def lkeys(limited: ServerHandle) -> dict[str, str]:
    return {
        "admin": limited.make_key("root", "admin"),
        "user": limited.make_key("alice", "user"),
        "worker": limited.make_key("boxes", "worker"),
    }


@pytest.fixture
def box(limited: ServerHandle, lkeys: dict[str, str]) -> Iterator[FakeWorker]:
    w = FakeWorker(limited, lkeys["worker"])
    w.register(batch_slots=4)
    yield w
    cancel_leftovers(limited, lkeys["admin"])
    with limited.http(lkeys["admin"]) as http:
        http.delete(f"/v1/scheduler/workers/{w.name}")
    w.close()


def test_the_default_applies_to_tasks_only_and_the_ceiling_to_both(
    limited: ServerHandle, lkeys: dict[str, str]
) -> None:
    user = lkeys["user"]
    assert post_task(limited, user, gpu=64)["time_limit_minutes"] == DEFAULT
    assert post_task(limited, user, gpu=64, time_limit_minutes=MAXIMUM)["time_limit_minutes"] == MAXIMUM
    assert post_task(limited, user, gpu=64, time_limit_minutes=1)["time_limit_minutes"] == 1
    # Services get no default: their idle timeout bounds them already.
    s = post_service(limited, user, gpu=64)
    assert "time_limit_minutes" not in s
    with limited.http(user) as http:
        err = expect_error(
            http.post("/v1/tasks", json={"job_name": "big", "time_limit_minutes": MAXIMUM + 1}),
            422,
            "VALIDATION_ERROR",
        )
        assert "time_limit_minutes" in err["error"] and str(MAXIMUM) in err["error"], err
        err = expect_error(
            http.post("/v1/jupyter/services", json={"name": "big", "time_limit_minutes": MAXIMUM + 1}),
            422,
            "VALIDATION_ERROR",
        )
        assert "time_limit_minutes" in err["error"], err
        assert not [j for j in http.get("/v1/jupyter/services").json() if j["name"] == "big"]
        http.delete(f"/v1/jupyter/services/{s['id']}")
    cancel_leftovers(limited, lkeys["admin"])


def test_the_assignment_carries_the_limit_in_seconds(
    limited: ServerHandle, lkeys: dict[str, str], box: FakeWorker
) -> None:
    t = post_task(limited, lkeys["user"], time_limit_minutes=4)
    a = box.must_claim()
    assert a.task.id == t["id"] and a.task.time_limit_minutes == 4
    assert a.time_limit_seconds == 4 * UNIT
    box.run_to(a, "running", "collecting", "completed")


def test_a_time_limit_failure_is_final(limited: ServerHandle, lkeys: dict[str, str], box: FakeWorker) -> None:
    t = post_task(limited, lkeys["user"], max_retries=3)
    a = box.must_claim()
    assert a.task.id == t["id"] and a.time_limit_seconds == DEFAULT * UNIT
    box.report(a, "running")
    box.report(a, "collecting")
    box.report(a, "failed", exit_code=143, error="time limit")
    with limited.http(lkeys["user"]) as http:
        got = http.get(f"/v1/tasks/{t['id']}").json()
    assert got["status"] == "failed" and got["error"] == "time limit" and got["exit_code"] == 143, got
    assert got["retry_count"] == 0 and got["attempt"] == 1
    assert box.claim() is None  # not queued again


# --- Jupyter: the sweep stops a running service past its limit ------------------------------


def test_a_service_past_its_time_limit_is_stopped_and_audited(
    server_factory: Callable[..., ServerHandle],
) -> None:
    # As in test_jupyter's idle cull: a heartbeat timeout (25 min) longer than each clock move
    # (the worker is never declared lost) and shorter than their sum (the sweep's start grace).
    srv = server_factory(FETCHML_HEARTBEAT_TIMEOUT="1500", FETCHML_SWEEP_INTERVAL="0.1")
    user, admin = srv.make_key("alice", "user"), srv.make_key("root", "admin")
    w = FakeWorker(srv, srv.make_key("boxes", "worker"))
    w.register(service_slots=2)
    # Busy all along (idle timeout 0): only the time limit can stop it.
    s = post_service(srv, user, idle_timeout_minutes=0, time_limit_minutes=30)
    free = post_service(srv, user, idle_timeout_minutes=0)
    started: set[str] = set()
    for _ in range(10):  # bounded: each claim starts what was placed on the worker
        started |= {x.id for x in w.client.jupyter_workers.claim(w.name, sorted(started), 2).start}
        if len(started) == 2:
            break
    assert started == {s["id"], free["id"]}
    for sid in (s["id"], free["id"]):
        url = f"http://127.0.0.1:9{proxy_path(sid)}"
        w.client.jupyter_workers.report(w.name, sid, ServiceReport(status="running", url=url))

    def status(sid: str) -> dict[str, Any]:
        with srv.http(user) as http:
            return dict(http.get(f"/v1/jupyter/services/{sid}").json())

    srv.advance_clock(20 * 60)
    w.heartbeat()
    time.sleep(0.5)
    assert status(s["id"])["status"] == "running"
    srv.advance_clock(11 * 60)
    w.heartbeat()
    got: dict[str, Any] = {}
    for _ in range(100):  # bounded: the sweep runs every 0.1 s
        got = status(s["id"])
        if got["status"] == "stopping":
            break
        time.sleep(0.1)
    assert got["status"] == "stopping" and got["stop_reason"] == "time_limit", got
    assert w.client.jupyter_workers.claim(w.name, [s["id"], free["id"]], 0).stop == [s["id"]]
    w.client.jupyter_workers.report(w.name, s["id"], ServiceReport(status="stopped"))
    got = status(s["id"])
    assert got["status"] == "stopped" and got["stop_reason"] == "time_limit", got
    assert status(free["id"])["status"] == "running"  # no limit, never stopped
    with srv.http(admin) as http:
        events = http.get("/v1/audit/events", params={"event_type": "jupyter_stopped", "limit": 1000}).json()
    mine = [e for e in events["events"] if e.get("resource") == f"jupyter:{s['id']}"]
    assert [e.get("action") for e in mine] == ["stopped", "time_limit"], events
    assert mine[-1]["user_id"] == "system" and mine[-1]["metadata"]["time_limit_minutes"] == 30
    w.close()
