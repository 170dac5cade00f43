"""Conformance: schemathesis against a real server, on the contract (docs/openapi.yaml) and on the
server's own document (/schema).

The contract does not declare every status it implies (409 on cancelling an ended task, 400 on a
bad parameter of most operations), so status codes are checked on our own document only; on the
contract, every response of a declared status must match its schema and content type, and none
may be a 5xx.

Every contract operation is routed. Plugin names and Jupyter service ids are generated, so those
operations mostly answer 404: nothing is configured and no tracker is probed.

Left to their own tests: the two SSE streams (tests/server/test_streams.py) and /ws
(tests/server/test_websocket.py). A stream does not end while its subject lives, and schemathesis
reads a body to its end; it also checks each SSE event against the response schema (OpenAPI 3.2's
reading), where the contract, an OpenAPI 3.0 document, declares the whole body a string.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fetchml.core.enums import Role
from tests.backends import SQLITE
from tests.harness import ServerHandle, ServerPool
from tests.server.test_snapshots import tarball

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# Enough to reach every branch of the schemas we send; more is time, not coverage.
MAX_EXAMPLES = 12
CONTRACT_CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
OWN_CHECKS = [*CONTRACT_CHECKS, status_code_conformance]
# Routes whose call would hang or throw the fixture away: held at a harmless value.
FIXED_QUERY: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/workers/{worker_id}/claim"): {"wait": 0},  # a long poll: answer at once
    ("GET", "/v1/tasks/{task_id}/logs"): {"follow": False},  # would stream until the task ends
}

STREAMS = {("GET", "/v1/scheduler/status/stream"), ("GET", "/v1/scheduler/jobs/{}/stream"), ("GET", "/ws")}


@dataclass
class World:
    """A server with one of everything, so generated requests reach more than 404."""

    server: ServerHandle
    admin: str
    user: str
    worker: str
    ids: dict[str, str] = field(default_factory=dict)

    def key_for(self, method: str, path: str) -> str:
        # Submitting work and uploading snapshots are what users do; admins may do the rest.
        if (method, path) in {("POST", "/v1/tasks"), ("PUT", "/v1/snapshots/{sha256}")}:
            return self.user
        return self.admin


def _build_world(server: ServerHandle) -> World:
    admin = server.make_key("root", Role.ADMIN)
    user = server.make_key("alice", Role.USER)
    worker = server.make_key("box-1", Role.WORKER)
    world = World(server, admin, user, worker)
    with server.http(worker) as w, server.http(user) as u, server.http(admin) as a:
        reg = w.post(
            "/v1/workers/register",
            json={
                "name": "box-1",
                "capabilities": {
                    "cpu_cores": 8,
                    "memory_gb": 32,
                    "gpu_count": 2,
                    "gpu_type": "A100",
                    "gpus": [{"index": 0, "name": "A100"}, {"index": 1, "name": "A100"}],
                },
                "batch_slots": 4,
            },
        )
        assert reg.status_code == 200, reg.text
        worker_id = reg.json()["worker_id"]
        task = u.post("/v1/tasks", json={"job_name": "conformance", "entrypoint": "train.py", "cpu": 1})
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
        claim = w.post(f"/v1/workers/{worker_id}/claim", params={"wait": 5})
        assert claim.status_code == 200, claim.text
        attempt = claim.json()["attempt"]
        assert w.post(f"/v1/tasks/{task_id}/report", json={"attempt": attempt, "status": "running"}).is_success
        logs = w.post(f"/v1/tasks/{task_id}/logs", json={"attempt": attempt, "start_line": 0, "lines": ["hi"]})
        assert logs.status_code == 204, logs.text
        art = w.put(f"/v1/tasks/{task_id}/artifacts/out/model.bin", params={"attempt": attempt}, content=b"w")
        assert art.status_code == 201, art.text
        # A second task, still queued: its priority can change, it can be cancelled.
        queued = u.post("/v1/tasks", json={"job_name": "waiting", "gpu": 64})
        assert queued.status_code == 201, queued.text
        res = a.post("/v1/scheduler/reservations", json={"gpu_count": 1, "expires_minutes": 60})
        assert res.status_code == 201, res.text
        exp = u.post("/v1/experiments", json={"name": "conformance"})
        assert exp.status_code == 201, exp.text
        blob = tarball({"train.py": b"print('hi')\n"})
        digest = hashlib.sha256(blob).hexdigest()
        snap = u.put(f"/v1/snapshots/{digest}", content=blob, headers={"Content-Type": "application/gzip"})
        assert snap.status_code == 201, snap.text
        spare = a.post("/v1/keys", json={"user": "spare", "role": "user"})
        assert spare.status_code == 201, spare.text
        # Events of our own types as well as the contract's, for the audit filter to act on.
        assert a.post("/v1/audit/verify").status_code == 200
    world.ids = {
        # The contract's names and ours for the same things.
        "taskId": queued.json()["id"],
        "jobId": queued.json()["id"],
        "task_id": task_id,
        "workerId": worker_id,
        "worker_id": worker_id,
        "key_id": spare.json()["id"],
        "sha256": digest,
        "path": "out/model.bin",
    }
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # One SQLite server for the module: conformance is about the HTTP layer, and the stores are
    # held to the same answers by the rest of the suite on both backends.
    pool = ServerPool(SQLITE)
    try:
        server = pool.handle(
            tmp_path_factory.mktemp("conformance"), {"FETCHML_RATE_LIMIT_PER_MINUTE": "1000000"}
        ).start()
        yield _build_world(server)
    finally:
        pool.close()


def _ordered(schema: Any) -> list[Any]:
    """Every operation of the document, deletions last (they spend the ids the rest use)."""
    ops = [result.ok() for result in schema.get_all_operations()]
    return sorted(ops, key=lambda op: (op.method.upper() == "DELETE", op.path, op.method))


def _shape(method: str, path: str) -> tuple[str, str]:
    return method.upper(), re.sub(r"\{[^}]*\}", "{}", path)


def _routed(world: World) -> set[tuple[str, str]]:
    """(method, path shape) of every route the server has, from its own document."""
    with world.server.http(world.admin) as http:
        doc = http.get("/schema/openapi.json").json()
    return {_shape(m, p) for p, item in doc["paths"].items() for m in item if m != "parameters"}


def _property(strategy: Any, base_url: str, headers: dict[str, str], checks: list[Any]) -> Callable[[], None]:
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same cases every run
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)

    return check  # type: ignore[no-any-return]


def _run(world: World, schema: Any, checks: list[Any], failures: list[str]) -> list[str]:
    ran: list[str] = []
    routed = _routed(world)
    for op in _ordered(schema):
        method = op.method.upper()
        if _shape(method, op.path) not in routed or _shape(method, op.path) in STREAMS:
            continue
        params = {p.name: world.ids[p.name] for p in op.path_parameters if p.name in world.ids}
        query = FIXED_QUERY.get((method, op.path))
        strategy = op.as_strategy(path_parameters=params or None, query=query)
        label = f"{method} {op.path}"
        ran.append(label)

        check = _property(strategy, world.server.url, {"X-API-Key": world.key_for(method, op.path)}, checks)
        try:
            check()
        # Every operation is checked, all failures reported at the end (schemathesis raises an
        # exception group).
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{label}: {exc}"[:3000])
    return ran


def test_contract_is_a_valid_openapi_30_document() -> None:
    spec, _ = read_from_filename(str(CONTRACT))
    validate(spec)


def test_the_servers_own_document_is_valid(world: World) -> None:
    with world.server.http(world.admin) as http:
        resp = http.get("/schema/openapi.json")
    assert resp.status_code == 200, resp.text
    validate(resp.json())


def test_contract_conformance(world: World) -> None:
    schema = schemathesis.openapi.from_path(CONTRACT)
    failures: list[str] = []
    ran = _run(world, schema, CONTRACT_CHECKS, failures)
    # What the server implements of the contract; a route lost from the router shows here.
    assert {"GET /v1/tasks", "POST /v1/tasks", "GET /v1/audit/events", "DELETE /v1/tasks/{taskId}"} <= set(ran)
    assert len(ran) >= 17, ran
    assert not failures, "\n\n".join(failures)


def test_own_schema_conformance(world: World) -> None:
    schema = schemathesis.openapi.from_url(
        f"{world.server.url}/schema/openapi.json", headers={"X-API-Key": world.admin}
    )
    failures: list[str] = []
    ran = _run(world, schema, OWN_CHECKS, failures)
    assert len(ran) >= 30, ran
    assert not failures, "\n\n".join(failures)
