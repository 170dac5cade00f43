"""/v1/keys (admin only): list, create (key shown once), revoke."""

from __future__ import annotations

import hashlib

import pytest

from tests.harness import Keys, ServerHandle, expect_error


def create(srv: ServerHandle, admin: str, user: str, role: str) -> dict:
    with srv.http(admin) as http:
        r = http.post("/v1/keys", json={"user": user, "role": role})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["admin", "user", "worker"])
def test_create_returns_the_key_once(shared_server: ServerHandle, keys: Keys, role: str) -> None:
    created = create(shared_server, keys.admin, f"new-{role}", role)
    assert set(created) >= {"id", "user_id", "role", "prefix", "created_at", "key"}
    assert created["user_id"] == f"new-{role}" and created["role"] == role and "revoked_at" not in created
    key = created["key"]
    assert key.startswith("fml_") and len(key) >= 40
    assert key.startswith(created["prefix"]) and len(created["prefix"]) < len(key)

    with shared_server.http(keys.admin) as http:
        listed = http.get("/v1/keys").json()
    mine = [k for k in listed if k["id"] == created["id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert key not in str(listed)

    # Stored as SHA-256 only.
    digest = hashlib.sha256(key.encode()).hexdigest()
    rows = shared_server.db_exec("SELECT key_hash FROM api_keys WHERE id = ?", (created["id"],))
    assert rows == [(digest,)]
    dump = "\n".join(map(str, shared_server.db_exec("SELECT * FROM api_keys")))
    assert key not in dump


def test_created_keys_work_with_their_role(shared_server: ServerHandle, keys: Keys) -> None:
    user_key = create(shared_server, keys.admin, "kate", "user")["key"]
    admin_key = create(shared_server, keys.admin, "liam", "admin")["key"]
    worker_key = create(shared_server, keys.admin, "node-7", "worker")["key"]
    with shared_server.http(user_key) as http:
        r = http.post("/v1/tasks", json={"job_name": "by-kate"})
        assert r.status_code == 201 and r.json()["user_id"] == "kate"
        expect_error(http.get("/v1/keys"), 403, "FORBIDDEN")
    with shared_server.http(admin_key) as http:
        assert http.get("/v1/keys").status_code == 200
    with shared_server.http(worker_key) as http:
        expect_error(http.get("/v1/tasks"), 403, "FORBIDDEN")


def test_list_keys(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        listed = http.get("/v1/keys").json()
    assert isinstance(listed, list)
    users = {k["user_id"]: k["role"] for k in listed}
    assert {"root": "admin", "alice": "user", "bob": "user", "gpu-box-1": "worker"}.items() <= users.items()
    for k in listed:
        assert "key" not in k and "key_hash" not in k


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": "x", "role": "superuser"}, "role"),
        ({"user": "x"}, "role"),
        ({"role": "user"}, "user"),
        ({"user": "has space", "role": "user"}, "user"),
        ({"user": "u" * 65, "role": "user"}, "user"),
        # A worker name binds worker keys only.
        ({"user": "x", "role": "user", "worker_name": "w"}, "worker_name"),
        ({"user": "x", "role": "admin", "worker_name": "w"}, "worker_name"),
        ({"user": "x", "role": "worker", "worker_name": "bad name"}, "worker_name"),
        ({"user": "x", "role": "worker", "worker_name": ""}, "worker_name"),
    ],
)
def test_create_validates(shared_server: ServerHandle, keys: Keys, body: dict, field: str) -> None:
    with shared_server.http(keys.admin) as http:
        err = expect_error(http.post("/v1/keys", json=body), 422, "VALIDATION_ERROR")
    assert field in err["error"]


def test_revoke(shared_server: ServerHandle, keys: Keys) -> None:
    created = create(shared_server, keys.admin, "mia", "user")
    with shared_server.http(created["key"]) as http:
        assert http.get("/v1/tasks").status_code == 200
    with shared_server.http(keys.admin) as http:
        r = http.delete(f"/v1/keys/{created['id']}")
        assert r.status_code == 204 and r.content == b""
        entry = next(k for k in http.get("/v1/keys").json() if k["id"] == created["id"])
        assert entry["revoked_at"] is not None
        # Revoking again conflicts; an unknown id is not found.
        expect_error(http.delete(f"/v1/keys/{created['id']}"), 409, "CONFLICT")
        expect_error(http.delete("/v1/keys/key_doesnotexist"), 404, "NOT_FOUND")
    with shared_server.http(created["key"]) as http:
        expect_error(http.get("/v1/tasks"), 401, "UNAUTHORIZED")


def test_revoking_ones_own_key(shared_server: ServerHandle, keys: Keys) -> None:
    created = create(shared_server, keys.admin, "temp-admin", "admin")
    with shared_server.http(created["key"]) as http:
        assert http.delete(f"/v1/keys/{created['id']}").status_code == 204
        expect_error(http.get("/v1/keys"), 401, "UNAUTHORIZED")


def test_revoking_one_key_leaves_the_users_other_keys(shared_server: ServerHandle, keys: Keys) -> None:
    first = create(shared_server, keys.admin, "noah", "user")
    second = create(shared_server, keys.admin, "noah", "user")
    with shared_server.http(keys.admin) as http:
        assert http.delete(f"/v1/keys/{first['id']}").status_code == 204
    with shared_server.http(second["key"]) as http:
        assert http.get("/v1/tasks").status_code == 200
    with shared_server.http(first["key"]) as http:
        expect_error(http.get("/v1/tasks"), 401, "UNAUTHORIZED")


def test_keys_are_admin_only(shared_server: ServerHandle, keys: Keys) -> None:
    for key in (keys.user, keys.worker):
        with shared_server.http(key) as http:
            expect_error(http.get("/v1/keys"), 403, "FORBIDDEN")
            expect_error(http.post("/v1/keys", json={"user": "evil", "role": "admin"}), 403, "FORBIDDEN")
            expect_error(http.delete("/v1/keys/anything"), 403, "FORBIDDEN")


def test_a_worker_key_is_bound_to_its_worker_name(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        r = http.post("/v1/keys", json={"user": "rack-3", "role": "worker", "worker_name": "gpu-30"})
        assert r.status_code == 201, r.text
        bound = r.json()
        default = create(shared_server, keys.admin, "gpu-31", "worker")
        plain = create(shared_server, keys.admin, "mia", "user")
        listed = {k["id"]: k for k in http.get("/v1/keys").json()}
        [created] = [
            e
            for e in http.get("/v1/audit/events", params={"event_type": "key_created", "limit": 1000}).json()[
                "events"
            ]
            if e["resource"] == f"key:{bound['id']}"
        ]
    assert bound["worker_name"] == "gpu-30" and listed[bound["id"]]["worker_name"] == "gpu-30"
    assert default["worker_name"] == "gpu-31"  # default: the key's user name
    assert "worker_name" not in plain or plain["worker_name"] is None
    assert created["metadata"]["worker_name"] == "gpu-30"
    caps = {"cpu_cores": 1, "memory_gb": 1}
    with shared_server.http(bound["key"]) as http:
        expect_error(
            http.post("/v1/workers/register", json={"name": "rack-3", "capabilities": caps}), 403, "FORBIDDEN"
        )
        assert (
            http.post("/v1/workers/register", json={"name": "gpu-30", "capabilities": caps}).status_code
            == 200
        )
    with shared_server.http(default["key"]) as http:
        assert (
            http.post("/v1/workers/register", json={"name": "gpu-31", "capabilities": caps}).status_code
            == 200
        )
