"""Who may call each route, read from the app's own routing table: the whole access matrix in
one place, so a route added, or a role widened, shows up here as a change to review."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetchml.host.settings import Settings

# METHOD path -> "public", "any key", or the roles joined with "+"; " +guard" for an extra guard.
ACCESS = {
    "DELETE /v1/jupyter/services/{service_id:str}": "admin+user",
    "DELETE /v1/keys/{key_id:str}": "admin",
    "DELETE /v1/plugins/{plugin_name:str}/config": "admin",
    "DELETE /v1/scheduler/workers/{worker_id:str}": "admin",
    "DELETE /v1/tasks/{task_id:str}": "admin+user",
    "DELETE,GET,PATCH,POST,PUT /v1/jupyter/services/{service_id:str}/proxy": "admin+user",
    "DELETE,GET,PATCH,POST,PUT /v1/jupyter/services/{service_id:str}/proxy/{path:path}": "admin+user",
    "GET /health": "public",
    "GET /metrics": "any key +metrics_access",
    "GET /v1/audit/chain-root": "admin",
    "GET /v1/audit/checkpoints": "admin",
    "GET /v1/audit/events": "admin",
    "GET /v1/audit/public-key": "admin+user+worker",
    "GET /v1/experiments": "admin+user",
    "GET /v1/jupyter/services": "admin+user",
    "GET /v1/jupyter/services/{service_id:str}": "admin+user",
    "GET /v1/keys": "admin",
    "GET /v1/plugins": "admin+user",
    "GET /v1/plugins/{plugin_name:str}": "admin+user",
    "GET /v1/plugins/{plugin_name:str}/config": "admin+user",
    "GET /v1/plugins/{plugin_name:str}/health": "admin+user",
    "GET /v1/queue": "admin+user",
    "GET /v1/scheduler/jobs/{task_id:str}/stream": "admin+user",
    "GET /v1/scheduler/reservations": "admin",
    "GET /v1/scheduler/status": "admin",
    "GET /v1/scheduler/status/stream": "admin",
    "GET /v1/scheduler/workers": "admin",
    "GET /v1/scheduler/workers/{worker_id:str}": "admin",
    "GET /v1/snapshots/{sha256:str}": "admin+worker",
    "GET /v1/tasks": "admin+user",
    "GET /v1/tasks/{task_id:str}": "admin+user",
    "GET /v1/tasks/{task_id:str}/artifacts": "admin+user",
    "GET /v1/tasks/{task_id:str}/artifacts/{path:path}": "admin+user",
    "GET /v1/tasks/{task_id:str}/logs": "admin+user+worker",
    "HEAD /v1/jupyter/services/{service_id:str}/proxy": "admin+user",
    "HEAD /v1/jupyter/services/{service_id:str}/proxy/{path:path}": "admin+user",
    "HEAD /v1/snapshots/{sha256:str}": "admin+user+worker",
    "PATCH /v1/scheduler/jobs/{task_id:str}/priority": "admin+user",
    "POST /v1/audit/verify": "admin",
    "POST /v1/experiments": "admin+user",
    "POST /v1/jupyter/services": "admin+user",
    "POST /v1/keys": "admin",
    "POST /v1/scheduler/reservations": "admin",
    "POST /v1/snapshots/{sha256:str}/share": "admin",
    "POST /v1/tasks": "admin+user",
    "POST /v1/tasks/{task_id:str}/logs": "admin+worker",
    "POST /v1/tasks/{task_id:str}/report": "admin+worker",
    "POST /v1/workers/register": "admin+worker",
    "POST /v1/workers/{worker_id:str}/claim": "admin+worker",
    "POST /v1/workers/{worker_id:str}/heartbeat": "admin+worker",
    "POST /v1/workers/{worker_id:str}/services/claim": "admin+worker",
    "POST /v1/workers/{worker_id:str}/services/{service_id:str}/report": "admin+worker",
    "PUT /v1/plugins/{plugin_name:str}/config": "admin",
    "PUT /v1/snapshots/{sha256:str}": "admin+user",
    "PUT /v1/tasks/{task_id:str}/artifacts/{path:path}": "admin+worker",
    "WS /v1/jupyter/services/{service_id:str}/proxy": "admin+user",
    "WS /v1/jupyter/services/{service_id:str}/proxy/{path:path}": "admin+user",
    "WS /ws": "admin+user",
}


def _access(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    from fetchml.server.app import create_app
    from fetchml.services.wiring import Services

    services = Services(Settings(data_dir=tmp_path))
    try:
        app = create_app(services)
    finally:
        services.db.dispose()
    found: dict[str, str] = {}
    guards: dict[str, int] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", None) or [route.route_handler]:  # type: ignore[attr-defined]
            methods = sorted(getattr(handler, "http_methods", None) or ["WS"])
            key = f"{','.join(methods)} {route.path}"
            resolved = handler.resolve_guards()
            guards[key] = len(resolved)
            if "OPTIONS" in methods or route.path.startswith("/schema"):
                continue
            roles = handler.opt.get("roles")
            if handler.opt.get("public"):
                text = "public"
            elif roles is None:
                text = "any key"
            else:
                text = "+".join(sorted(r.value for r in roles))
            extra = [g.__name__ for g in resolved[1:]]
            found[key] = text + (f" +{','.join(extra)}" if extra else "")
    return found, guards


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_route_allows_exactly_the_roles_listed(tmp_path: Path) -> None:
    found, guards = _access(tmp_path)
    assert found == ACCESS, {k: (found.get(k), ACCESS.get(k)) for k in found.keys() | ACCESS.keys()
                             if found.get(k) != ACCESS.get(k)}  # fmt: skip
    # One guard authenticates and checks the role: Litestar copies the handler for every guard
    # it calls, so a second one per route cost a few percent of a submission's CPU.
    assert {k: n for k, n in guards.items() if n != 1} == {"GET /metrics": 2}
