"""Authentication (401) and role checks (403) on every protected route."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fetchml.core.timeutil import utcnow
from tests.harness import Keys, ServerHandle, expect_error

ADMIN, USER, WORKER = "admin", "user", "worker"
NO_SNAPSHOT = "0" * 64


def route_table(
    task_id: str, worker: str = "no-such-worker", register_as: str | None = None
) -> list[tuple[str, str, Callable[[], Any] | None, set[str]]]:
    """(method, path, body factory, roles allowed). Bodies are valid, so an allowed call is 2xx/404.

    A worker key acts only as the worker name it is bound to: the worker protocol routes use
    `worker` (not registered when they are called: 404) and register `register_as` last."""
    return [
        ("GET", "/v1/tasks", None, {ADMIN, USER}),
        ("POST", "/v1/tasks", lambda: {"job_name": "authz"}, {ADMIN, USER}),
        ("GET", f"/v1/tasks/{task_id}", None, {ADMIN, USER}),
        ("DELETE", "/v1/tasks/no-such-task", None, {ADMIN, USER}),
        ("GET", "/v1/queue", None, {ADMIN, USER}),
        ("GET", "/v1/experiments", None, {ADMIN, USER}),
        ("POST", "/v1/experiments", lambda: {"name": f"authz-{uuid.uuid4().hex}"}, {ADMIN, USER}),
        ("GET", "/v1/audit/events", None, {ADMIN}),
        ("POST", "/v1/audit/verify", None, {ADMIN}),
        ("GET", "/v1/audit/chain-root", None, {ADMIN}),
        ("GET", "/v1/audit/checkpoints", None, {ADMIN}),
        ("GET", "/v1/audit/public-key", None, {ADMIN, USER, WORKER}),
        ("GET", "/v1/keys", None, {ADMIN}),
        ("POST", "/v1/keys", lambda: {"user": "matrix", "role": "user"}, {ADMIN}),
        ("DELETE", "/v1/keys/key_000000000000", None, {ADMIN}),
        ("GET", "/schema/openapi.json", None, {ADMIN, USER}),
        ("POST", f"/v1/workers/{worker}/heartbeat", lambda: {"active": []}, {ADMIN, WORKER}),
        ("POST", f"/v1/workers/{worker}/claim?wait=0", None, {ADMIN, WORKER}),
        (
            "POST",
            "/v1/workers/register",
            lambda: {
                "name": register_as or f"authz-{uuid.uuid4().hex[:8]}",
                "capabilities": {"cpu_cores": 1, "memory_gb": 1},
            },
            {ADMIN, WORKER},
        ),
        (
            "POST",
            "/v1/tasks/no-such-task/report",
            lambda: {"attempt": 1, "status": "running"},
            {ADMIN, WORKER},
        ),
        (
            "POST",
            "/v1/tasks/no-such-task/logs",
            lambda: {"attempt": 1, "start_line": 0, "lines": ["x"]},
            {ADMIN, WORKER},
        ),
        # alice's task: its log is hers and the admins' (tests/security/test_api1_object_access.py).
        ("GET", f"/v1/tasks/{task_id}/logs", None, {ADMIN, USER}),
        ("GET", f"/v1/tasks/{task_id}/artifacts", None, {ADMIN, USER}),
        ("GET", f"/v1/tasks/{task_id}/artifacts/no/such/file.txt", None, {ADMIN, USER}),
        ("PUT", "/v1/tasks/no-such-task/artifacts/out.txt?attempt=1", None, {ADMIN, WORKER}),
        ("PUT", f"/v1/snapshots/{NO_SNAPSHOT}", None, {ADMIN, USER}),
        ("GET", f"/v1/snapshots/{NO_SNAPSHOT}", None, {ADMIN, WORKER}),
        ("POST", f"/v1/snapshots/{NO_SNAPSHOT}/share", None, {ADMIN}),
        ("GET", "/v1/scheduler/status", None, {ADMIN}),
        ("GET", "/v1/scheduler/status/stream", None, {ADMIN}),
        ("GET", f"/v1/scheduler/jobs/{task_id}/stream", None, {ADMIN, USER}),
        ("GET", "/metrics", None, {ADMIN}),
        ("GET", "/v1/scheduler/workers", None, {ADMIN}),
        ("GET", "/v1/scheduler/workers/no-such-worker", None, {ADMIN}),
        ("DELETE", "/v1/scheduler/workers/no-such-worker", None, {ADMIN}),
        ("GET", "/v1/scheduler/reservations", None, {ADMIN}),
        ("POST", "/v1/scheduler/reservations", lambda: {"gpu_count": 1}, {ADMIN}),
        ("GET", "/v1/plugins", None, {ADMIN, USER}),
        ("GET", "/v1/plugins/no-such-plugin", None, {ADMIN, USER}),
        ("GET", "/v1/plugins/no-such-plugin/config", None, {ADMIN, USER}),
        ("PUT", "/v1/plugins/no-such-plugin/config", lambda: {"mode": "disabled"}, {ADMIN}),
        ("DELETE", "/v1/plugins/no-such-plugin/config", None, {ADMIN}),
        ("GET", "/v1/plugins/no-such-plugin/health", None, {ADMIN, USER}),
        # Never placed (no worker has 64 GPUs of a made-up type): nothing starts on the shared server.
        (
            "POST",
            "/v1/jupyter/services",
            lambda: {"name": f"authz-{uuid.uuid4().hex[:8]}", "gpu": 64, "gpu_type": "authz-none"},
            {ADMIN, USER},
        ),
        ("GET", "/v1/jupyter/services", None, {ADMIN, USER}),
        ("GET", "/v1/jupyter/services/no-such-service", None, {ADMIN, USER}),
        ("DELETE", "/v1/jupyter/services/no-such-service", None, {ADMIN, USER}),
        *[
            (m, f"/v1/jupyter/services/no-such-service/proxy{rest}", None, {ADMIN, USER})
            for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
            for rest in ("", "/api/status")
        ],
        ("POST", f"/v1/workers/{worker}/services/claim?wait=0", lambda: {"running": []}, {ADMIN, WORKER}),
        (
            "POST",
            f"/v1/workers/{worker}/services/no-such-service/report",
            lambda: {"status": "stopped"},
            {ADMIN, WORKER},
        ),
        # alice's own task: her key may change it (200), so may an admin; bob's is covered elsewhere.
        ("PATCH", f"/v1/scheduler/jobs/{task_id}/priority", lambda: {"priority": 5}, {ADMIN, USER}),
    ]


@pytest.fixture(scope="module")
def alice_task(shared_server: ServerHandle, keys: Keys) -> str:
    with shared_server.http(keys.user) as http:
        r = http.post("/v1/tasks", json={"job_name": "owned-by-alice"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def request(srv: ServerHandle, key: str | None, method: str, path: str, body: Any = None, **kw: Any):
    with srv.http(key) as http, http.stream(method, path, json=body, **kw) as resp:
        # An event stream that opened does not end by itself: its status is the answer.
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            resp.read()
        return resp


# --- 401 ---------------------------------------------------------------------------------------


ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in route_table("{task_id}")]


@pytest.mark.parametrize("route", range(len(ROUTE_IDS)), ids=ROUTE_IDS)
def test_every_protected_route_needs_a_key(shared_server: ServerHandle, alice_task: str, route: int) -> None:
    method, path, body, _ = route_table(alice_task)[route]
    expect_error(request(shared_server, None, method, path, body() if body else None), 401, "UNAUTHORIZED")


def test_route_table_covers_the_app(shared_server: ServerHandle, keys: Keys, alice_task: str) -> None:
    """Every operation in the server's own OpenAPI is in the table above (besides /health)."""
    with shared_server.http(keys.admin) as http:
        spec = http.get("/schema/openapi.json").json()
    # HEAD answers have no body to hold an error envelope: tests/server/test_snapshots.py checks them.
    ops = {
        (m.upper(), p) for p, item in spec["paths"].items() for m in item if p != "/health" and m != "head"
    }
    table = {
        (m, p.replace(alice_task, "{task_id}").replace("no-such-task", "{task_id}"))
        for m, p, _, _ in route_table(alice_task)
    }
    table = {
        (
            m,
            p.split("?")[0]
            .replace("key_000000000000", "{key_id}")
            .replace("no-such-worker", "{worker_id}")
            .replace("artifacts/no/such/file.txt", "artifacts/{path}")
            .replace("artifacts/out.txt", "artifacts/{path}")
            .replace(NO_SNAPSHOT, "{sha256}")
            .replace("no-such-service/proxy/api/status", "{service_id}/proxy/{path}")
            .replace("no-such-service/proxy", "{service_id}/proxy")
            .replace("no-such-service", "{service_id}")
            .replace("no-such-plugin", "{plugin_name}"),
        )
        for m, p in table
    }
    assert ops <= table | {("GET", "/schema/openapi.json")}, ops - table


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": ""},
        {"X-API-Key": "fml_definitely-not-a-key"},
        {"X-API-Key": "not even prefixed"},
        {"X-API-Key": "fml_" + "x" * 5000},
        {"Authorization": "Bearer fml_whatever"},
    ],
    ids=["empty", "unknown", "unprefixed", "huge", "bearer-header"],
)
def test_bad_keys_are_unauthorized(shared_server: ServerHandle, headers: dict[str, str]) -> None:
    with shared_server.http() as http:
        r = http.get("/v1/tasks", headers=headers)
    expect_error(r, 401, "UNAUTHORIZED")


def test_key_is_case_sensitive_and_exact(shared_server: ServerHandle, keys: Keys) -> None:
    for variant in (keys.user.upper(), keys.user + "x", keys.user[:-1], keys.user[4:]):
        expect_error(request(shared_server, variant, "GET", "/v1/tasks"), 401, "UNAUTHORIZED")


def test_key_in_query_string_is_not_accepted(shared_server: ServerHandle, keys: Keys) -> None:
    r = request(
        shared_server, None, "GET", "/v1/tasks", params={"api_key": keys.user, "X-API-Key": keys.user}
    )
    expect_error(r, 401, "UNAUTHORIZED")


def test_unauthorized_beats_validation(shared_server: ServerHandle) -> None:
    """No key, garbage body: the answer is 401, not 400/422 (nothing is parsed for strangers)."""
    with shared_server.http() as http:
        r = http.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})
    expect_error(r, 401, "UNAUTHORIZED")


def test_key_revoked_through_the_api_stops_working_at_once(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as admin:
        created = admin.post("/v1/keys", json={"user": "carol", "role": "user"}).json()
    key = created["key"]
    assert request(shared_server, key, "GET", "/v1/tasks").status_code == 200  # now cached
    with shared_server.http(keys.admin) as admin:
        assert admin.delete(f"/v1/keys/{created['id']}").status_code == 204
    expect_error(request(shared_server, key, "GET", "/v1/tasks"), 401, "UNAUTHORIZED")


def revoke_in_db(srv: ServerHandle, key: str) -> None:
    stamp = utcnow().replace(tzinfo=None).isoformat(sep=" ")
    digest = hashlib.sha256(key.encode()).hexdigest()
    srv.db_exec("UPDATE api_keys SET revoked_at = ? WHERE key_hash = ?", (stamp, digest))
    assert srv.db_exec("SELECT revoked_at FROM api_keys WHERE key_hash = ?", (digest,))[0][0]


@pytest.fixture(scope="module")
def uncached_server(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_AUTH_CACHE_SECONDS="0")


@pytest.fixture(scope="module")
def long_cache_server(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_AUTH_CACHE_SECONDS="30")


def test_key_revoked_in_the_database_fails_without_auth_cache(uncached_server: ServerHandle) -> None:
    key = uncached_server.make_key("dave", "user")
    assert request(uncached_server, key, "GET", "/v1/tasks").status_code == 200
    revoke_in_db(uncached_server, key)
    expect_error(request(uncached_server, key, "GET", "/v1/tasks"), 401, "UNAUTHORIZED")


def test_key_deleted_from_the_database_fails_without_auth_cache(uncached_server: ServerHandle) -> None:
    key = uncached_server.make_key("erin", "admin")
    assert request(uncached_server, key, "GET", "/v1/keys").status_code == 200
    uncached_server.db_exec(
        "DELETE FROM api_keys WHERE key_hash = ?",
        (hashlib.sha256(key.encode()).hexdigest(),),
    )
    expect_error(request(uncached_server, key, "GET", "/v1/keys"), 401, "UNAUTHORIZED")


def test_auth_cache_expires_after_its_lifetime(shared_server: ServerHandle) -> None:
    """Default FETCHML_AUTH_CACHE_SECONDS is 2: a key revoked behind the server's back dies by then."""
    key = shared_server.make_key("frank", "user")
    assert request(shared_server, key, "GET", "/v1/queue").status_code == 200
    revoke_in_db(shared_server, key)
    revoked_at = time.monotonic()
    while request(shared_server, key, "GET", "/v1/queue").status_code == 200:
        assert time.monotonic() - revoked_at < 4.0, "revoked key still accepted well past the 2 s cache"
        time.sleep(0.1)
    expect_error(request(shared_server, key, "GET", "/v1/queue"), 401, "UNAUTHORIZED")


def test_api_revocation_clears_even_a_long_auth_cache(long_cache_server: ServerHandle) -> None:
    admin = long_cache_server.make_key("root", "admin")
    cached = long_cache_server.make_key("gina", "user")
    behind_the_back = long_cache_server.make_key("hank", "user")
    for key in (cached, behind_the_back):
        assert request(long_cache_server, key, "GET", "/v1/tasks").status_code == 200

    # Revoked in the database only: the 30 s cache still lets it in (so the cache is real) ...
    revoke_in_db(long_cache_server, behind_the_back)
    assert request(long_cache_server, behind_the_back, "GET", "/v1/tasks").status_code == 200

    # ... but revocation through the API clears this server's cache at once.
    with long_cache_server.http(admin) as http:
        key_id = next(k["id"] for k in http.get("/v1/keys").json() if k["user_id"] == "gina")
        assert http.delete(f"/v1/keys/{key_id}").status_code == 204
    expect_error(request(long_cache_server, cached, "GET", "/v1/tasks"), 401, "UNAUTHORIZED")


# --- 403 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [ADMIN, USER, WORKER])
def test_role_matrix(shared_server: ServerHandle, keys: Keys, alice_task: str, role: str) -> None:
    key = {ADMIN: keys.admin, USER: keys.user, WORKER: keys.worker}[role]
    worker = "no-such-worker"
    if role == WORKER:
        worker = f"matrix-{uuid.uuid4().hex[:8]}"
        key = shared_server.make_key("matrix-box", "worker", worker_name=worker)
    failures = []
    for method, path, body, allowed in route_table(alice_task, worker, worker if role == WORKER else None):
        if role == WORKER and path.startswith("/schema"):
            continue  # the worker protocol's own routes are not part of this issue
        r = request(shared_server, key, method, path, body() if body else None)
        if role in allowed:
            if r.status_code in (401, 403) or r.status_code >= 500:
                failures.append(f"{role} {method} {path}: expected access, got {r.status_code} {r.text}")
        else:
            try:
                expect_error(r, 403, "FORBIDDEN")
            except AssertionError as exc:
                failures.append(f"{role} {method} {path}: {exc}")
    assert not failures, "\n".join(failures)


def test_forbidden_beats_validation(shared_server: ServerHandle, keys: Keys) -> None:
    """A user posting garbage to an admin route learns only that it is forbidden."""
    with shared_server.http(keys.user) as http:
        expect_error(http.post("/v1/keys", json={"nonsense": True}), 403, "FORBIDDEN")
        r = http.post("/v1/keys", content=b"{broken", headers={"content-type": "application/json"})
        expect_error(r, 403, "FORBIDDEN")
    with shared_server.http(keys.worker) as http:
        expect_error(http.post("/v1/tasks", json={"job_name": "bad name!"}), 403, "FORBIDDEN")


def test_forbidden_has_no_side_effect(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as admin:
        before_tasks = admin.get("/v1/tasks", params={"user_id": "gpu-box-1"}).json()["total"]
        before_keys = len(admin.get("/v1/keys").json())
    with shared_server.http(keys.worker) as http:
        expect_error(http.post("/v1/tasks", json={"job_name": "sneaky"}), 403, "FORBIDDEN")
    with shared_server.http(keys.user) as http:
        expect_error(http.post("/v1/keys", json={"user": "alice", "role": "admin"}), 403, "FORBIDDEN")
    with shared_server.http(keys.admin) as admin:
        assert admin.get("/v1/tasks", params={"user_id": "gpu-box-1"}).json()["total"] == before_tasks
        assert len(admin.get("/v1/keys").json()) == before_keys
