"""Reservation routes: validation, capacity conflicts, listing, and tasks that name one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.harness import Keys, ServerHandle, expect_error, make_keys
from tests.protocol_kit import FakeWorker, cancel_leftovers, unique


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def keys(srv: ServerHandle) -> Keys:
    return make_keys(srv)


@pytest.fixture
def box(srv: ServerHandle, keys: Keys) -> Iterator[tuple[FakeWorker, str]]:
    gpu_type = unique("R")
    w = FakeWorker(srv, keys.worker)
    w.register(gpus=[0, 1, 2], gpu_type=gpu_type)
    yield w, gpu_type
    cancel_leftovers(srv, keys.admin)
    with srv.http(keys.admin) as http:
        http.delete(f"/v1/scheduler/workers/{w.name}")
    w.close()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"gpu_count": 0},
        {"gpu_count": "1"},
        {"gpu_count": True},
        {"gpu_count": 1, "node_count": 0},
        {"gpu_count": 1, "expires_minutes": 0},
        {"gpu_count": 1, "gpu_type": ""},
    ],
)
def test_bad_requests_are_422(srv: ServerHandle, keys: Keys, body: dict[str, object]) -> None:
    with srv.http(keys.admin) as http:
        expect_error(http.post("/v1/scheduler/reservations", json=body), 422, "VALIDATION_ERROR")


def test_a_reservation_takes_free_gpus_of_the_type_or_is_409(
    srv: ServerHandle, keys: Keys, box: tuple[FakeWorker, str]
) -> None:
    w, gpu_type = box
    with srv.http(keys.admin) as http:
        err = expect_error(
            http.post("/v1/scheduler/reservations", json={"gpu_count": 1, "gpu_type": unique("none")}),
            409,
            "CONFLICT",
        )
        assert "Not enough free capacity" in err["error"]
        expect_error(
            http.post(
                "/v1/scheduler/reservations", json={"gpu_count": 1, "gpu_type": gpu_type, "node_count": 2}
            ),
            409,
            "CONFLICT",
        )
        r = http.post("/v1/scheduler/reservations", json={"gpu_count": 2, "gpu_type": gpu_type.lower()})
        assert r.status_code == 201, r.text
        res = r.json()
        assert res["gpus"] == {w.name: [0, 1]} and res["status"] == "active" and res["user_id"] == "root"
        assert res["node_count"] == 1 and res["gpu_count"] == 2
        # What it holds is no longer free for another reservation.
        expect_error(
            http.post("/v1/scheduler/reservations", json={"gpu_count": 2, "gpu_type": gpu_type}),
            409,
            "CONFLICT",
        )
        assert (
            http.post("/v1/scheduler/reservations", json={"gpu_count": 1, "gpu_type": gpu_type}).status_code
            == 201
        )
        listed = [x["id"] for x in http.get("/v1/scheduler/reservations").json()]
        assert res["id"] in listed
        assert http.get("/v1/scheduler/status").json()["reservations_active"] >= 2
    # Held GPUs are withheld from a plain task, which says why.
    with srv.http(keys.user) as http:
        tid = http.post("/v1/tasks", json={"job_name": "plain", "gpu": 1, "gpu_type": gpu_type}).json()["id"]
    assert w.claim() is None
    with srv.http(keys.user) as http:
        reason = http.get(f"/v1/tasks/{tid}").json()["pending_reason"]
    assert reason.startswith("capacity held by reservation"), reason


def test_tasks_may_name_only_a_live_reservation_of_their_owner(
    srv: ServerHandle, keys: Keys, box: tuple[FakeWorker, str]
) -> None:
    _, gpu_type = box
    with srv.http(keys.admin) as http:
        res = http.post("/v1/scheduler/reservations", json={"gpu_count": 1, "gpu_type": gpu_type}).json()
    with srv.http(keys.user) as http:
        expect_error(
            http.post("/v1/tasks", json={"job_name": "x", "reservation_id": "r-nope"}),
            422,
            "VALIDATION_ERROR",
        )
        expect_error(
            http.post("/v1/tasks", json={"job_name": "x", "reservation_id": res["id"]}), 403, "FORBIDDEN"
        )
        before = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
    with srv.http(keys.admin) as http:
        ok = http.post("/v1/tasks", json={"job_name": "x", "reservation_id": res["id"]})
        assert ok.status_code == 201 and ok.json()["reservation_id"] == res["id"], ok.text
        assert http.get(f"/v1/tasks/{ok.json()['id']}").json()["reservation_id"] == res["id"]
        before += 1
    # The server's clock moves to just before the end of the reservation: still live; then past it.
    lifetime = (ts(res["expires_at"]) - ts(res["created_at"])).total_seconds()
    srv.advance_clock(lifetime - 30)
    with srv.http(keys.admin) as http:
        ok = http.post("/v1/tasks", json={"job_name": "x", "reservation_id": res["id"]})
        assert ok.status_code == 201, ok.text
        before += 1
    srv.advance_clock(31)
    with srv.http(keys.admin) as http:
        err = expect_error(
            http.post("/v1/tasks", json={"job_name": "x", "reservation_id": res["id"]}),
            422,
            "VALIDATION_ERROR",
        )
        assert "expired" in err["error"]
        assert res["id"] not in [x["id"] for x in http.get("/v1/scheduler/reservations").json()]
    with srv.http(keys.user) as http:
        assert http.get("/v1/tasks", params={"limit": 1}).json()["total"] == before  # nothing half-written
