"""API5 Broken function level authorization: every route of the app, for every kind of caller,
answers exactly the status this table says.

The routes come from the app's own routing table, so a route added later without a row here
fails `test_the_table_covers_every_route`. Each cell is a real request to a real server on
loopback, with a harmless well-formed body and ids of real objects where the route needs them,
so that the status is the authorisation decision: 401, 403, or what the route does once let in.
The "user" column acts on alice's OWN objects; other users' objects have their own cells below.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.harness import ServerHandle, make_keys

ROLES = ("none", "bad", "user", "worker", "admin")
BAD_KEY = "fml_" + "x" * 43  # well-formed, unknown

# (method, path) -> statuses for (none, bad, user, worker, admin).
Row = tuple[int, int, int, int, int]
ANON: Row = (401, 401, 200, 200, 200)  # any valid key
ADMIN: Row = (401, 401, 403, 403, 200)
MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/health"): (200, 200, 200, 200, 200),
    # The OpenAPI document (no HTML viewers, see test_api8_headers).
    ("GET", "/schema"): ANON,
    ("GET", "/schema/openapi.json"): ANON,
    ("GET", "/schema/openapi.yaml"): ANON,
    ("GET", "/schema/openapi.yml"): ANON,
    ("GET", "/schema/{path}"): (401, 401, 404, 404, 404),
    # Tasks (users and admins).
    ("GET", "/v1/tasks"): (401, 401, 200, 403, 200),
    ("POST", "/v1/tasks"): (401, 401, 201, 403, 201),
    ("GET", "/v1/tasks/{task_id}"): (401, 401, 200, 403, 200),
    ("DELETE", "/v1/tasks/{task_id}"): (401, 401, 204, 403, 204),
    ("GET", "/v1/queue"): (401, 401, 200, 403, 200),
    ("PATCH", "/v1/scheduler/jobs/{task_id}/priority"): (401, 401, 200, 403, 200),
    # Logs: workers append (only to an attempt they hold: this task is held by nobody).
    ("GET", "/v1/tasks/{task_id}/logs"): (401, 401, 200, 403, 200),
    ("POST", "/v1/tasks/{task_id}/logs"): (401, 401, 403, 409, 409),
    # Artifacts: owners and admins read, workers upload (again: not held, so a conflict).
    ("GET", "/v1/tasks/{task_id}/artifacts"): (401, 401, 200, 403, 200),
    ("GET", "/v1/tasks/{task_id}/artifacts/{path}"): (401, 401, 404, 403, 404),
    ("PUT", "/v1/tasks/{task_id}/artifacts/{path}"): (401, 401, 403, 409, 409),
    # Worker protocol.
    ("POST", "/v1/workers/register"): (401, 401, 403, 200, 200),
    ("POST", "/v1/workers/{worker_id}/heartbeat"): (401, 401, 403, 200, 200),
    ("POST", "/v1/workers/{worker_id}/claim"): (401, 401, 403, 204, 204),
    ("POST", "/v1/tasks/{task_id}/report"): (401, 401, 403, 409, 409),
    # Snapshots: users upload, anyone with a key asks, workers download, admins share.
    ("PUT", "/v1/snapshots/{sha256}"): (401, 401, 201, 403, 201),
    ("HEAD", "/v1/snapshots/{sha256}"): (401, 401, 200, 200, 200),
    ("GET", "/v1/snapshots/{sha256}"): (401, 401, 403, 403, 200),
    ("POST", "/v1/snapshots/{sha256}/share"): (401, 401, 403, 403, 204),
    # Experiments.
    ("GET", "/v1/experiments"): (401, 401, 200, 403, 200),
    ("POST", "/v1/experiments"): (401, 401, 201, 403, 201),
    # Admin only.
    ("GET", "/v1/audit/events"): ADMIN,
    ("POST", "/v1/audit/verify"): ADMIN,
    ("GET", "/v1/audit/chain-root"): ADMIN,
    ("GET", "/v1/audit/checkpoints"): ADMIN,
    # The checkpoint public key is not secret: any valid key reads it.
    ("GET", "/v1/audit/public-key"): ANON,
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): (401, 401, 403, 403, 201),
    ("DELETE", "/v1/keys/{key_id}"): (401, 401, 403, 403, 204),
    ("GET", "/v1/scheduler/status"): ADMIN,
    # The SSE streams (tests/server/test_streams.py): the status here, the stream left unread.
    ("GET", "/v1/scheduler/status/stream"): ADMIN,
    ("GET", "/v1/scheduler/jobs/{task_id}/stream"): (401, 401, 200, 403, 200),
    ("GET", "/metrics"): ADMIN,  # unless FETCHML_METRICS_PUBLIC (tests/server/test_metrics.py)
    ("GET", "/v1/scheduler/workers"): ADMIN,
    ("GET", "/v1/scheduler/workers/{worker_id}"): ADMIN,
    ("DELETE", "/v1/scheduler/workers/{worker_id}"): (401, 401, 403, 403, 204),
    ("GET", "/v1/scheduler/reservations"): ADMIN,
    ("POST", "/v1/scheduler/reservations"): (401, 401, 403, 403, 409),
    # Jupyter services: alice's own (queued: nothing can place it, so the proxy is a 409).
    ("GET", "/v1/jupyter/services"): (401, 401, 200, 403, 200),
    ("POST", "/v1/jupyter/services"): (401, 401, 201, 403, 201),
    ("GET", "/v1/jupyter/services/{service_id}"): (401, 401, 200, 403, 200),
    ("DELETE", "/v1/jupyter/services/{service_id}"): (401, 401, 204, 403, 204),
    ("DELETE", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("GET", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("HEAD", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("PATCH", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("POST", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("PUT", "/v1/jupyter/services/{service_id}/proxy"): (401, 401, 409, 403, 409),
    ("DELETE", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    ("GET", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    ("HEAD", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    ("PATCH", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    ("POST", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    ("PUT", "/v1/jupyter/services/{service_id}/proxy/{path}"): (401, 401, 409, 403, 409),
    # Tracking plugins: users and admins read (redacted), admins write (an unknown plugin: 404).
    ("GET", "/v1/plugins"): (401, 401, 200, 403, 200),
    ("GET", "/v1/plugins/{plugin_name}"): (401, 401, 200, 403, 200),
    ("GET", "/v1/plugins/{plugin_name}/config"): (401, 401, 200, 403, 200),
    ("PUT", "/v1/plugins/{plugin_name}/config"): (401, 401, 403, 403, 200),
    ("DELETE", "/v1/plugins/{plugin_name}/config"): (401, 401, 403, 403, 204),
    ("GET", "/v1/plugins/{plugin_name}/health"): (401, 401, 200, 403, 200),
    # The worker protocol's service half: this worker holds no service of alice's.
    ("POST", "/v1/workers/{worker_id}/services/claim"): (401, 401, 403, 200, 200),
    ("POST", "/v1/workers/{worker_id}/services/{service_id}/report"): (401, 401, 403, 403, 403),
}

# Alice's objects in another caller's hands: (method, path, caller) -> status.
OTHERS: dict[tuple[str, str, str], int] = {
    ("GET", "/v1/tasks/{task_id}", "other"): 200,
    ("DELETE", "/v1/tasks/{task_id}", "other"): 403,
    ("PATCH", "/v1/scheduler/jobs/{task_id}/priority", "other"): 403,
    ("GET", "/v1/scheduler/jobs/{task_id}/stream", "other"): 403,
    ("GET", "/v1/tasks/{task_id}/logs", "other"): 403,
    ("GET", "/v1/tasks/{task_id}/artifacts", "other"): 403,
    ("GET", "/v1/tasks/{task_id}/artifacts/{path}", "other"): 403,
    ("HEAD", "/v1/snapshots/{sha256}", "other"): 404,  # alice's unshared upload
    ("POST", "/v1/workers/register", "worker-other-name"): 403,  # a worker key, another name
    ("POST", "/v1/workers/{worker_id}/heartbeat", "worker-other-name"): 403,
    ("POST", "/v1/workers/{worker_id}/claim", "worker-other-name"): 403,
    ("GET", "/v1/jupyter/services/{service_id}", "other"): 403,
    ("DELETE", "/v1/jupyter/services/{service_id}", "other"): 403,
    ("GET", "/v1/jupyter/services/{service_id}/proxy/{path}", "other"): 403,
    ("POST", "/v1/workers/{worker_id}/services/claim", "worker-other-name"): 403,
}

# What Litestar's own OPTIONS handler answers a caller the guards let through.
OPTIONS_STATUS = 204


def app_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, from its own routing table."""
    import tempfile
    import warnings
    from pathlib import Path

    from fetchml.host.settings import Settings
    from fetchml.server.app import create_app
    from fetchml.services.wiring import Services

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        services = Services(Settings(data_dir=Path(tmp)))
        try:
            app = create_app(services)
        finally:
            services.db.dispose()
        routes = set()
        for route in app.routes:
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            for method in route.methods:
                if method != "OPTIONS":
                    routes.add((method, path))
    return routes


def test_the_table_covers_every_route() -> None:
    served = app_routes()
    assert served - MATRIX.keys() == set(), "routes with no row in MATRIX"
    assert MATRIX.keys() - served == set(), "rows in MATRIX for routes the app does not serve"
    assert {(m, p) for m, p, _ in OTHERS} <= served


# --- the world the requests act on -------------------------------------------------------------


def tarball(seed: str) -> bytes:
    """A gzip tarball holding one small file (what a snapshot is)."""
    import io
    import tarfile

    data = seed.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class World:
    srv: ServerHandle
    keys: dict[str, str | None]
    worker_id: str  # registered by the worker key
    drain_worker_id: str  # another worker, for the admin's drain
    snapshot: str  # sha256 of alice's upload, unshared
    task_ids: dict[str, str] = field(default_factory=dict)
    service_ids: dict[str, str] = field(default_factory=dict)

    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def http(self, role: str) -> httpx.Client:
        """One kept-alive client per caller: some 300 requests stay quick."""
        if role not in self.clients:
            key = self.keys[role]
            headers = {"X-API-Key": key} if key else {}
            self.clients[role] = httpx.Client(base_url=self.srv.url, headers=headers, timeout=30)
        return self.clients[role]

    def task(self, owner: str = "user") -> str:
        """A fresh queued task nothing can run (no worker has 64 GPUs)."""
        http = self.http(owner)
        r = http.post("/v1/tasks", json={"job_name": "matrix", "gpu": 64})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def service(self, owner: str = "user") -> str:
        """A fresh queued Jupyter service nothing can run (no worker has 64 GPUs)."""
        http = self.http(owner)
        r = http.post("/v1/jupyter/services", json={"name": f"m-{uuid.uuid4().hex[:8]}", "gpu": 64})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def upload(self) -> str:
        """A fresh snapshot of alice's."""
        data = tarball(uuid.uuid4().hex)
        sha = hashlib.sha256(data).hexdigest()
        http = self.http("user")
        assert http.put(f"/v1/snapshots/{sha}", content=data).status_code == 201
        return sha

    def key_id(self) -> str:
        http = self.http("admin")
        r = http.post("/v1/keys", json={"user": f"tmp-{uuid.uuid4().hex[:6]}", "role": "user"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


Request = tuple[str, dict[str, Any]]


def build(world: World, method: str, template: str, role: str) -> Request:
    """The concrete path and request arguments of one cell."""
    body: dict[str, Any] = {}
    params: dict[str, str] = {}
    values: dict[str, str] = {}
    if "{task_id}" in template:
        # The task is alice's (the "user" column acts on its own task); cancelling consumes one.
        values["task_id"] = world.task() if method == "DELETE" else world.task_ids["alice"]
    if "{service_id}" in template:
        # Stopping consumes one.
        plain = template == "/v1/jupyter/services/{service_id}"
        values["service_id"] = world.service() if plain and method == "DELETE" else world.service_ids["alice"]
    if "{plugin_name}" in template:
        values["plugin_name"] = "tensorboard"
    if "{worker_id}" in template:
        values["worker_id"] = world.drain_worker_id if method == "DELETE" else world.worker_id
    if "{key_id}" in template:
        values["key_id"] = world.key_id() if role == "admin" else "0" * 32
    if "{sha256}" in template:
        # Sharing changes what others may see: the admin shares a fresh upload, not the one
        # the cells of other users look at.
        share = template.endswith("/share") and role == "admin"
        values["sha256"] = world.upload() if share else world.snapshot
    if template == "/schema/{path}":
        values["path"] = "nothing-here"
    elif "{path}" in template:
        values["path"] = "out/model.bin"
    path = template.format(**values)

    if (method, template) == ("POST", "/v1/tasks"):
        body = {"json": {"job_name": "matrix", "gpu": 64}}
    elif template.endswith("/priority"):
        body = {"json": {"priority": 7}}
    elif template.endswith("/logs") and method == "POST":
        body = {"json": {"attempt": 1, "start_line": 0, "lines": ["x"]}}
    elif template.endswith("/artifacts/{path}") and method == "PUT":
        params = {"attempt": "1"}
        body = {"content": b"artifact"}
    elif template == "/v1/workers/register":
        name = "gpu-box-1" if role != "admin" else "admin-box"
        body = {"json": {"name": name, "capabilities": {"cpu_cores": 1, "memory_gb": 1}}}
    elif template.endswith("/heartbeat"):
        body = {"json": {"active": []}}
    elif template.endswith("/services/claim"):
        params = {"wait": "0"}
        body = {"json": {"running": []}}
    elif template.endswith("/claim"):
        params = {"wait": "0"}
    elif template.endswith("/services/{service_id}/report"):
        body = {"json": {"status": "stopped"}}
    elif (method, template) == ("PUT", "/v1/plugins/{plugin_name}/config"):
        body = {"json": {"mode": "disabled"}}
    elif (method, template) == ("POST", "/v1/jupyter/services"):
        body = {"json": {"name": f"m-{uuid.uuid4().hex[:8]}", "gpu": 64}}
    elif template.endswith("/report"):
        body = {"json": {"attempt": 1, "status": "running"}}
    elif method == "PUT" and template.startswith("/v1/snapshots"):
        data = tarball(uuid.uuid4().hex)
        path = f"/v1/snapshots/{hashlib.sha256(data).hexdigest()}"
        body = {"content": data}
    elif (method, template) == ("POST", "/v1/experiments"):
        body = {"json": {"name": f"exp-{uuid.uuid4().hex[:8]}"}}
    elif (method, template) == ("POST", "/v1/keys"):
        body = {"json": {"user": f"made-{uuid.uuid4().hex[:6]}", "role": "user"}}
    elif (method, template) == ("POST", "/v1/scheduler/reservations"):
        body = {"json": {"gpu_count": 1}}
    return path, {"params": params, **body}


def send(world: World, role: str, method: str, template: str) -> httpx.Response:
    path, kwargs = build(world, method, template, role)
    http = world.http(role)
    with http.stream(method, path, **kwargs) as resp:
        # An event stream that opened does not end by itself: its status is the answer.
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            resp.read()
        return resp


@pytest.fixture(scope="module")
def world(module_server_factory: Callable[..., ServerHandle]) -> Iterator[World]:
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    keys = make_keys(srv)
    roles: dict[str, str | None] = {
        "none": None,
        "bad": BAD_KEY,
        "user": keys.user,
        "other": keys.other,
        "worker": keys.worker,
        "admin": keys.admin,
        "worker-other-name": srv.make_key("gpu-box-9", "worker"),
    }
    drainer = srv.make_key("gpu-box-2", "worker")
    ids = {}
    for key, name in ((keys.worker, "gpu-box-1"), (drainer, "gpu-box-2")):
        with srv.http(key) as http:
            r = http.post(
                "/v1/workers/register", json={"name": name, "capabilities": {"cpu_cores": 1, "memory_gb": 1}}
            )
        assert r.status_code == 200, r.text
        ids[name] = r.json()["worker_id"]
    data = tarball("alice's code")
    sha = hashlib.sha256(data).hexdigest()
    with srv.http(keys.user) as http:
        assert http.put(f"/v1/snapshots/{sha}", content=data).status_code == 201
    w = World(srv, roles, ids["gpu-box-1"], ids["gpu-box-2"], sha)
    w.task_ids["alice"] = w.task("user")
    w.service_ids["alice"] = w.service("user")
    yield w
    for client in w.clients.values():
        client.close()


def cells() -> list[tuple[str, str, str]]:
    return [(m, p, role) for (m, p) in sorted(MATRIX) for role in ROLES]


def test_route_by_role(world: World) -> None:
    """All cells in one test (one report of every mismatch, not one failure at a time)."""
    wrong = []
    for method, template, role in cells():
        expected = MATRIX[(method, template)][ROLES.index(role)]
        r = send(world, role, method, template)
        if r.status_code != expected:
            wrong.append(
                f"{method} {template} as {role}: {r.status_code}, expected {expected}: {r.text[:120]}"
            )
    assert not wrong, "\n" + "\n".join(wrong)


def test_other_callers_on_alices_objects(world: World) -> None:
    wrong = []
    for (method, template, caller), expected in sorted(OTHERS.items()):
        r = send(world, caller, method, template)
        if r.status_code != expected:
            wrong.append(
                f"{method} {template} as {caller}: {r.status_code}, expected {expected}: {r.text[:120]}"
            )
    assert not wrong, "\n" + "\n".join(wrong)


def test_options_is_guarded_like_the_route(world: World) -> None:
    """Litestar answers OPTIONS on every path by itself; the auth guard still runs first, so
    without a key it is a 401 everywhere (even /health: OPTIONS there is no health check)."""
    wrong = []
    for template in sorted({p for _, p in MATRIX}):
        for role, expected in (("none", 401), ("bad", 401), ("admin", OPTIONS_STATUS)):
            path, _ = build(world, "GET", template, role)
            http = world.http(role)
            r = http.options(path)
            if r.status_code != expected or (expected == OPTIONS_STATUS and r.content):
                wrong.append(f"OPTIONS {template} as {role}: {r.status_code} {r.text[:80]}")
    assert not wrong, "\n" + "\n".join(wrong)
