"""/schema serves the generated OpenAPI, and it lists every route the server answers."""

from __future__ import annotations

import json
import re

import pytest

from fetchml.host.settings import Settings
from tests.harness import Keys, ServerHandle, expect_error

# Every operation of this issue, in the server's own path spelling.
EXPECTED = {
    ("get", "/health"),
    ("get", "/v1/tasks"),
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks/{task_id}"),
    ("delete", "/v1/tasks/{task_id}"),
    ("get", "/v1/queue"),
    ("get", "/v1/experiments"),
    ("post", "/v1/experiments"),
    ("get", "/v1/audit/events"),
    ("post", "/v1/audit/verify"),
    ("get", "/v1/audit/chain-root"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys"),
    ("delete", "/v1/keys/{key_id}"),
}
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec(shared_server: ServerHandle, keys: Keys) -> dict:
    with shared_server.http(keys.user) as http:
        r = http.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def operations(spec: dict) -> set[tuple[str, str]]:
    return {(m, p) for p, item in spec["paths"].items() for m in item if m in METHODS}


def test_schema_needs_a_key(shared_server: ServerHandle) -> None:
    with shared_server.http() as http:
        for path in ("/schema", "/schema/openapi.json"):
            expect_error(http.get(path), 401, "UNAUTHORIZED")


def test_openapi_lists_every_route(spec: dict) -> None:
    assert spec["openapi"].startswith("3.")
    missing = EXPECTED - operations(spec)
    assert not missing, f"routes missing from /schema: {sorted(missing)}"


# Building the app in-process repeats Litestar's deprecation notes about parameter styles; the
# server prints them in its own log already.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_openapi_matches_the_routes_the_app_serves(spec: dict, tmp_path) -> None:
    """Compared with the app's own routing table, so a route added later cannot hide."""
    from fetchml.server.app import create_app
    from fetchml.services.wiring import Services

    services = Services(Settings(data_dir=tmp_path))
    app = create_app(services)
    services.db.dispose()
    served = set()
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods:
            if method.lower() in METHODS:
                served.add((method.lower(), path))
    assert served >= EXPECTED
    assert served == operations(spec), served ^ operations(spec)


def test_security_is_declared(spec: dict) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"]["type"] == "apiKey"
    assert schemes["ApiKeyAuth"]["in"] == "header"
    assert schemes["ApiKeyAuth"]["name"] == "X-API-Key"
    assert {"ApiKeyAuth": []} in spec.get("security", [])
    # /health opts out: [] or [{}] both mean "no credentials" in OpenAPI; absent would inherit.
    assert spec["paths"]["/health"]["get"].get("security") in ([], [{}])
    for path, item in spec["paths"].items():
        if path != "/health":
            for op in item.values():
                assert op.get("security") in (None, [{"ApiKeyAuth": []}]), (path, op.get("security"))


def test_request_and_response_models_are_documented(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    for name in (
        "CreateTaskRequest",
        "Task",
        "TaskList",
        "QueueStats",
        "Experiment",
        "AuditEventList",
        "VerificationResult",
        "HealthResponse",
    ):
        assert any(key == name or key.endswith(f"_{name}") for key in schemas), name
    create = next(v for k, v in schemas.items() if k.endswith("CreateTaskRequest"))
    assert "job_name" in create["properties"] and "job_name" in create.get("required", [])


def test_schema_page_embeds_the_same_document(shared_server: ServerHandle, keys: Keys, spec: dict) -> None:
    with shared_server.http(keys.user) as http:
        r = http.get("/schema")
    assert r.status_code == 200
    for _, path in EXPECTED:
        assert json.dumps(path)[1:-1] in r.text, path
