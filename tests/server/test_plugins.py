"""Tracking plugins' configs and health through the API: validation naming the field, secrets
redacted in every response, audit event and log line, health of a remote probed on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.harness import Keys, ServerHandle, expect_error, free_port, make_keys

SECRET = "wandb-SECRET-0123456789abcdef"


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def keys(srv: ServerHandle) -> Keys:
    return make_keys(srv)


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # a tracker's host: any answer means reachable
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def put(srv: ServerHandle, key: str, name: str, body: dict[str, Any]) -> Any:
    with srv.http(key) as http:
        return http.put(f"/v1/plugins/{name}/config", json=body)


def test_the_three_plugins_start_disabled(srv: ServerHandle, keys: Keys) -> None:
    with srv.http(keys.user) as http:
        got = {p["name"]: p for p in http.get("/v1/plugins").json()}
    assert set(got) >= {"mlflow", "tensorboard", "wandb"}
    assert got["tensorboard"]["mode"] == "disabled" and got["tensorboard"]["enabled"] is False
    assert got["tensorboard"]["status"]["status"] == "stopped"


def test_unknown_plugins_are_404(srv: ServerHandle, keys: Keys) -> None:
    with srv.http(keys.admin) as http:
        for path in ("/v1/plugins/comet", "/v1/plugins/comet/config", "/v1/plugins/comet/health"):
            expect_error(http.get(path), 404, "NOT_FOUND")
        expect_error(http.put("/v1/plugins/comet/config", json={"mode": "remote"}), 404, "NOT_FOUND")
        expect_error(http.delete("/v1/plugins/comet/config"), 404, "NOT_FOUND")


def test_only_admins_write(srv: ServerHandle, keys: Keys) -> None:
    body = {"mode": "remote", "settings": {"url": "http://127.0.0.1:1/"}}
    expect_error(put(srv, keys.user, "tensorboard", body), 403, "FORBIDDEN")
    with srv.http(keys.user) as http:
        expect_error(http.delete("/v1/plugins/tensorboard/config"), 403, "FORBIDDEN")
    with srv.http(keys.worker) as http:
        expect_error(http.get("/v1/plugins"), 403, "FORBIDDEN")
    with srv.http() as http:
        expect_error(http.get("/v1/plugins"), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("wandb", {"mode": "remote", "settings": {"project": "p"}}, "settings.api_key"),
        ("wandb", {"mode": "sidecar", "settings": {}}, "mode"),
        ("wandb", {"mode": "remote", "settings": {"api_key": "k", "colour": "red"}}, "settings.colour"),
        ("wandb", {"mode": "remote", "settings": {"api_key": "k", "mode": "sometimes"}}, "settings.mode"),
        ("wandb", {"mode": "remote", "settings": {"api_key": "k", "base_url": "ftp://x"}}, "settings.base_url"),
        ("mlflow", {"mode": "remote", "settings": {"tracking_uri": "not a url"}}, "settings.tracking_uri"),
        ("mlflow", {"mode": "remote", "settings": {"tracking_uri": "http://h/", "port": 1}}, "settings.port"),
        ("mlflow", {"mode": "remote", "image": "x", "settings": {"tracking_uri": "http://h/"}}, "image"),
        ("mlflow", {"enabled": False, "mode": "remote", "settings": {"tracking_uri": "http://h/"}}, "enabled"),
        ("tensorboard", {"mode": "sidecar", "settings": {"port": 70000}}, "settings.port"),
        ("tensorboard", {"mode": "sidecar", "settings": {"host": "--logdir=/"}}, "settings.host"),
        ("mlflow", {"mode": "sidecar", "settings": {"public_url": "ftp://x"}}, "settings.public_url"),
        ("mlflow", {"mode": "sidecar", "settings": {"tracking_uri": "http://h/"}}, "settings.tracking_uri"),
        ("mlflow", {"mode": "teleport"}, "mode"),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    srv: ServerHandle, keys: Keys, name: str, body: dict[str, Any], field: str
) -> None:
    with srv.http(keys.admin) as http:
        before = http.get(f"/v1/plugins/{name}/config").json()
    err = expect_error(put(srv, keys.admin, name, body), 422, "VALIDATION_ERROR")
    assert field in err["error"], err
    with srv.http(keys.admin) as http:
        assert http.get(f"/v1/plugins/{name}/config").json() == before  # nothing stored


def test_wandb_key_is_stored_but_never_shown(srv: ServerHandle, keys: Keys, stub: str) -> None:
    body = {"mode": "remote", "settings": {"api_key": SECRET, "base_url": stub, "project": "demo"}}
    r = put(srv, keys.admin, "wandb", body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["enabled"] is True and got["mode"] == "remote"
    assert got["config"]["settings"] == {"api_key": "***", "base_url": stub, "project": "demo", "mode": "online"}
    with srv.http(keys.user) as http:
        seen = [http.get("/v1/plugins").text, http.get("/v1/plugins/wandb").text]
        seen.append(http.get("/v1/plugins/wandb/config").text)
        health = http.get("/v1/plugins/wandb/health").json()
    with srv.http(keys.admin) as http:
        seen.append(http.get("/v1/audit/events", params={"event_type": "plugin_configured", "limit": 1000}).text)
    assert health["status"] == "healthy"
    assert all(SECRET not in text for text in seen)
    assert SECRET not in srv.log_path.read_text()
    assert '"***"' in seen[-1]


def test_urls_lose_their_passwords_and_query_tokens(srv: ServerHandle, keys: Keys) -> None:
    uri = "https://bob:hunter2@mlflow.example:5443/base?token=abc123"
    r = put(srv, keys.admin, "mlflow", {"mode": "remote", "settings": {"tracking_uri": uri, "token": "t0k"}})
    assert r.status_code == 200, r.text
    text = r.text
    assert "hunter2" not in text and "abc123" not in text and "t0k" not in text
    assert r.json()["config"]["settings"]["tracking_uri"] == "https://bob:***@mlflow.example:5443/base?token=***"


def test_health_of_a_remote_and_of_a_disabled_plugin(srv: ServerHandle, keys: Keys, stub: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    assert put(srv, keys.admin, "tensorboard", {"mode": "remote", "settings": {"url": dead}}).status_code == 200
    with srv.http(keys.user) as http:
        assert http.get("/v1/plugins/tensorboard/health").json()["status"] == "unhealthy"
        status = http.get("/v1/plugins/tensorboard").json()["status"]
        assert status["status"] == "unhealthy" and status["last_check"]
    assert put(srv, keys.admin, "tensorboard", {"mode": "remote", "settings": {"url": stub}}).status_code == 200
    with srv.http(keys.user) as http:
        assert http.get("/v1/plugins/tensorboard/health").json()["status"] == "healthy"
        assert http.get("/v1/plugins/tensorboard").json()["status"]["status"] == "healthy"
    with srv.http(keys.admin) as http:
        assert http.delete("/v1/plugins/tensorboard/config").status_code == 204
        got = http.get("/v1/plugins/tensorboard").json()
        assert got["mode"] == "disabled" and got["status"]["status"] == "stopped"
        assert got["config"]["settings"] == {"url": stub}  # kept for when it is enabled again
        assert http.get("/v1/plugins/tensorboard/health").json()["status"] == "unhealthy"
