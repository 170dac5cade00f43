"""/v1/experiments: create (201, unique name, <=128 chars) and list, newest first."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import Keys, ServerHandle, expect_error


def unique(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_create_experiment(shared_server: ServerHandle, keys: Keys) -> None:
    name = unique()
    with shared_server.http(keys.user) as http:
        r = http.post(
            "/v1/experiments", json={"name": name, "description": "first try", "commit_id": "abc123"}
        )
    assert r.status_code == 201, r.text
    e = r.json()
    assert e["name"] == name and e["description"] == "first try" and e["commit_id"] == "abc123"
    assert e["status"] == "active"
    assert e["user_id"] == "alice"
    assert isinstance(e["id"], str) and e["id"]
    created = datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)


def test_admin_may_create_too(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        r = http.post("/v1/experiments", json={"name": unique("admin")})
    assert r.status_code == 201 and r.json()["user_id"] == "root"


def test_name_of_128_chars_is_fine_129_is_not(shared_server: ServerHandle, keys: Keys) -> None:
    base = uuid.uuid4().hex
    with shared_server.http(keys.user) as http:
        assert http.post("/v1/experiments", json={"name": (base * 5)[:128]}).status_code == 201
        err = expect_error(
            http.post("/v1/experiments", json={"name": (base * 5)[:129]}), 422, "VALIDATION_ERROR"
        )
    assert "name" in err["error"]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": 42}, {"description": "no name"}])
def test_invalid_bodies_are_422(shared_server: ServerHandle, keys: Keys, body: dict) -> None:
    with shared_server.http(keys.user) as http:
        err = expect_error(http.post("/v1/experiments", json=body), 422, "VALIDATION_ERROR")
    assert "name" in err["error"]


def test_duplicate_name_is_409(shared_server: ServerHandle, keys: Keys) -> None:
    name = unique("dup")
    with shared_server.http(keys.user) as http:
        assert http.post("/v1/experiments", json={"name": name}).status_code == 201
        expect_error(http.post("/v1/experiments", json={"name": name}), 409, "CONFLICT")
    with shared_server.http(keys.other) as http:  # names are global, not per user
        expect_error(http.post("/v1/experiments", json={"name": name}), 409, "CONFLICT")
    with shared_server.http(keys.user) as http:
        assert sum(e["name"] == name for e in http.get("/v1/experiments", params={"limit": 1000}).json()) == 1


def test_list_newest_first_with_pagination(shared_server: ServerHandle, keys: Keys) -> None:
    names = [unique(f"order{i}") for i in range(4)]
    with shared_server.http(keys.user) as http:
        for n in names:
            assert http.post("/v1/experiments", json={"name": n}).status_code == 201
        listed = http.get("/v1/experiments", params={"limit": 1000}).json()
        assert isinstance(listed, list)
        positions = [next(i for i, e in enumerate(listed) if e["name"] == n) for n in names]
        assert positions == sorted(positions, reverse=True)
        assert [e["name"] for e in listed[:4]] == list(reversed(names))
        stamps = [e["created_at"] for e in listed]
        assert stamps == sorted(stamps, reverse=True)

        first = http.get("/v1/experiments", params={"limit": 2}).json()
        second = http.get("/v1/experiments", params={"limit": 2, "offset": 2}).json()
        assert [e["id"] for e in first + second] == [e["id"] for e in listed[:4]]
        expect_error(http.get("/v1/experiments", params={"limit": 0}), 400, "BAD_REQUEST")
        expect_error(http.get("/v1/experiments", params={"limit": 1001}), 400, "BAD_REQUEST")


def test_everyone_with_access_sees_all_experiments(shared_server: ServerHandle, keys: Keys) -> None:
    name = unique("shared")
    with shared_server.http(keys.user) as http:
        http.post("/v1/experiments", json={"name": name})
    with shared_server.http(keys.other) as http:
        assert name in {e["name"] for e in http.get("/v1/experiments", params={"limit": 1000}).json()}


def test_concurrent_creates_of_one_name_yield_exactly_one(shared_server: ServerHandle, keys: Keys) -> None:
    name = unique("race")

    def attempt(_: int) -> int:
        with shared_server.http(keys.user) as http:
            return http.post("/v1/experiments", json={"name": name}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(attempt, range(16)))
    assert codes == [201] + [409] * 15, codes
    with shared_server.http(keys.admin) as http:
        assert http.post("/v1/audit/verify").json()["valid"] is True
        created = http.get(
            "/v1/audit/events", params={"event_type": "experiment_created", "limit": 1000}
        ).json()
    assert sum(e["metadata"].get("name") == name for e in created["events"]) == 1
