"""API8 Security misconfiguration: response headers, the schema pages, the client address the
server believes (X-Forwarded-For) and the access log line (no forged lines)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.harness import Keys, ServerHandle, make_keys, wait_for_log

EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def assert_security_headers(resp: httpx.Response, what: str) -> None:
    for name, value in EXPECTED_HEADERS.items():
        got = resp.headers.get_list(name)
        assert got == [value], f"{what} ({resp.status_code}): {name} is {got!r}, expected [{value!r}]"


def test_security_headers_on_every_kind_of_response(shared_server: ServerHandle, keys: Keys) -> None:
    srv = shared_server
    with srv.http() as anon, srv.http(keys.user) as user, srv.http(keys.admin) as admin:
        task = user.post("/v1/tasks", json={"job_name": "hdr"})
        assert task.status_code == 201, task.text
        cases: list[tuple[str, httpx.Response, int]] = [
            ("health", anon.get("/health"), 200),
            ("no key", anon.get("/v1/tasks"), 401),
            ("bad key", anon.get("/v1/tasks", headers={"X-API-Key": "fml_not-a-key"}), 401),
            ("wrong role", user.get("/v1/keys"), 403),
            ("unknown route", user.get("/v1/nothing-here"), 404),
            ("unknown task", user.get("/v1/tasks/0123"), 404),
            ("method not allowed", user.put("/v1/queue"), 405),
            ("invalid body", user.post("/v1/tasks", json={"job_name": "bad name!"}), 422),
            ("list", user.get("/v1/tasks"), 200),
            ("created task", task, 201),
            ("new key", admin.post("/v1/keys", json={"user": "hdr-user", "role": "user"}), 201),
            ("openapi", user.get("/schema/openapi.json"), 200),
        ]
        # A 500 through the real path: a row the server cannot read back.
        broken = user.post("/v1/tasks", json={"job_name": "broken"}).json()["id"]
        srv.db_exec("UPDATE tasks SET status = 'not-a-status' WHERE id = ?", (broken,))
        cases.append(("internal error", user.get(f"/v1/tasks/{broken}"), 500))
        srv.db_exec("UPDATE tasks SET status = 'queued' WHERE id = ?", (broken,))
    for what, resp, status in cases:
        assert resp.status_code == status, (what, resp.status_code, resp.text)
        assert_security_headers(resp, what)
        assert resp.headers.get("x-trace-id"), what
    key_resp = next(r for w, r, _ in cases if w == "new key")
    assert "key" in key_resp.json()


SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
SCHEMA_PAGES = (
    "/schema",
    "/schema/",
    "/schema/swagger",
    "/schema/redoc",
    "/schema/elements",
    "/schema/rapidoc",
    "/schema/scalar",
    "/schema/openapi.json",
    "/schema/openapi.yaml",
    "/schema/openapi.yml",
)


def test_schema_pages_load_no_external_scripts(shared_server: ServerHandle, keys: Keys) -> None:
    served = {}
    with shared_server.http(keys.user) as http:
        for path in SCHEMA_PAGES:
            r = http.get(path)
            assert r.status_code in (200, 404), (path, r.status_code, r.text[:200])
            if r.status_code == 200:
                served[path] = r
                assert not SCRIPT_SRC.search(r.text), f"{path} loads a script from elsewhere"
                assert "<script" not in r.text.lower(), f"{path} is a page with scripts"
                assert_security_headers(r, path)
    # The document stays available, as JSON and as YAML.
    assert served["/schema/openapi.json"].json()["openapi"].startswith("3.")
    assert served["/schema/openapi.yaml"].text.startswith(("openapi:", "components:", "info:"))


# --- X-Forwarded-For -------------------------------------------------------------------------

FAILURE_BUDGET = 4  # failed authentications per address per minute on these servers


@pytest.fixture(scope="module")
def untrusting(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(FAILURE_BUDGET))
    return srv, make_keys(srv)


@pytest.fixture(scope="module")
def trusting(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE=str(FAILURE_BUDGET), FETCHML_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8"
    )
    return srv, make_keys(srv)


def failed_auth_ips(srv: ServerHandle, admin_key: str, marker: str) -> list[str | None]:
    with srv.http(admin_key) as http:
        r = http.get("/v1/audit/events", params={"event_type": "auth_attempt", "limit": 1000})
    assert r.status_code == 200, r.text
    return [
        e["ip_address"]
        for e in r.json()["events"]
        if str(e["metadata"].get("key_prefix", "")).startswith(marker)
    ]


def spoofed_failures(srv: ServerHandle, marker: str, count: int) -> list[int]:
    """`count` made-up keys, each claiming a different address in X-Forwarded-For."""
    codes = []
    with srv.http() as http:
        for i in range(count):
            r = http.get(
                "/v1/queue",
                headers={"X-API-Key": f"{marker}{i:03d}", "X-Forwarded-For": f"203.0.113.{i + 1}"},
            )
            codes.append(r.status_code)
    return codes


def test_forwarded_for_from_an_untrusted_peer_is_ignored(untrusting: tuple[ServerHandle, Keys]) -> None:
    srv, keys = untrusting
    codes = spoofed_failures(srv, "fml_spoof", FAILURE_BUDGET + 2)
    # Every spoofed address is still loopback to the limiter: the budget runs out.
    assert codes == [401] * FAILURE_BUDGET + [429, 429], codes
    ips = failed_auth_ips(srv, keys.admin, "fml_spoof")
    assert ips == ["127.0.0.1"] * FAILURE_BUDGET, ips


def test_forwarded_for_from_a_trusted_proxy_names_the_client(trusting: tuple[ServerHandle, Keys]) -> None:
    srv, keys = trusting
    codes = spoofed_failures(srv, "fml_proxied", FAILURE_BUDGET + 2)
    assert codes == [401] * (FAILURE_BUDGET + 2), codes  # each address has a budget of its own
    ips = failed_auth_ips(srv, keys.admin, "fml_proxied")
    assert sorted(ips, key=str) == sorted((f"203.0.113.{i + 1}" for i in range(FAILURE_BUDGET + 2)), key=str)
    # Right-most untrusted hop: a client prepending its own made-up address gains nothing, and
    # a trusted inner proxy (10.0.0.0/8) is skipped.
    with srv.http() as http:
        r = http.get(
            "/v1/queue",
            headers={"X-API-Key": "fml_chain0000", "X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.2.3"},
        )
        assert r.status_code == 401
        r = http.get("/v1/queue", headers={"X-API-Key": "fml_garbage00", "X-Forwarded-For": "not-an-ip"})
        assert r.status_code == 401
    assert failed_auth_ips(srv, keys.admin, "fml_chain") == ["198.51.100.7"]
    assert failed_auth_ips(srv, keys.admin, "fml_garbage") == ["127.0.0.1"]


# --- access log ------------------------------------------------------------------------------


def test_a_newline_in_the_path_cannot_forge_a_log_line(shared_server: ServerHandle, keys: Keys) -> None:
    marker = uuid.uuid4().hex
    forged = f"127.0.0.1 GET /forged-{marker} 200 1.0ms trace_id=x user=root"
    raw_path = "/v1/tasks/x%0a" + forged.replace(" ", "%20") + "%0d%00%1b%7f%C3%A9"
    with shared_server.http(keys.user) as http:
        r = http.get(raw_path)
    assert r.status_code == 404
    text = wait_for_log(shared_server, f"forged-{marker}")
    lines = [line for line in text.splitlines() if f"forged-{marker}" in line]
    assert len(lines) == 1, lines
    line = lines[0]
    # One line, written by the server, with the control characters as visible escapes.
    assert "GET /v1/tasks/x\\x0a127.0.0.1 GET /forged-" in line, line
    # The route does not exist, so nobody was authenticated: the real status and user close it.
    assert re.search(r" 404 [0-9.]+ms trace_id=[0-9a-f-]{36} user=-$", line.rstrip()), line
    assert "\\x0d\\x00\\x1b\\x7f\\xe9" in line, line
    assert not any(line.startswith("127.0.0.1 GET /forged") for line in text.splitlines())
