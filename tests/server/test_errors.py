"""The error envelope: exactly {error, code, trace_id}, contract codes, trace id in header and log."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import Keys, ServerHandle, expect_error, wait_for_log

MIB = 1024 * 1024


def padded_task(total_bytes: int) -> bytes:
    """A valid CreateTaskRequest of exactly total_bytes, padded with JSON whitespace."""
    head, tail = b'{"job_name":"padded"', b"}"
    pad = total_bytes - len(head) - len(tail)
    assert pad >= 0
    return head + b" " * pad + tail


JSON = {"content-type": "application/json"}


# --- framework errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_key", [False, True])
@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/tasks/a/b", "/v2/tasks"])
def test_unknown_path_is_404_envelope(
    shared_server: ServerHandle, keys: Keys, path: str, with_key: bool
) -> None:
    with shared_server.http(keys.user if with_key else None) as http:
        expect_error(http.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/tasks"),
        ("PATCH", "/v1/tasks"),
        ("POST", "/health"),
        ("DELETE", "/v1/queue"),
        ("POST", "/v1/audit/chain-root"),
        ("GET", "/v1/audit/verify"),
        ("PUT", "/v1/keys"),
    ],
)
def test_wrong_method_is_405_envelope(
    shared_server: ServerHandle, keys: Keys, method: str, path: str
) -> None:
    with shared_server.http(keys.admin) as http:
        # 405 has no code of its own in the contract: it is a bad request.
        expect_error(http.request(method, path), 405, "BAD_REQUEST")


def test_oversize_body_is_413_envelope(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        expect_error(http.post("/v1/tasks", content=padded_task(MIB + 1), headers=JSON), 413, "BAD_REQUEST")


def test_oversize_chunked_body_is_413_envelope(shared_server: ServerHandle, keys: Keys) -> None:
    """No Content-Length to trust: the limit holds while the body streams in."""

    def chunks() -> Iterator[bytes]:
        body = padded_task(2 * MIB)
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    with shared_server.http(keys.user) as http:
        r = http.post("/v1/tasks", content=chunks(), headers=JSON)
    expect_error(r, 413, "BAD_REQUEST")


def test_body_at_the_default_limit_is_accepted(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        r = http.post("/v1/tasks", content=padded_task(MIB), headers=JSON)
    assert r.status_code == 201, r.text[:300]


@pytest.fixture(scope="module")
def small_body_server(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_MAX_BODY_BYTES="2048")


def test_body_limit_follows_the_setting(small_body_server: ServerHandle) -> None:
    key = small_body_server.make_key("alice", "user")
    with small_body_server.http(key) as http:
        assert http.post("/v1/tasks", content=padded_task(2048), headers=JSON).status_code == 201
        expect_error(http.post("/v1/tasks", content=padded_task(2049), headers=JSON), 413, "BAD_REQUEST")
        expect_error(
            http.post("/v1/experiments", json={"name": "x" * 100, "description": "d" * 3000}),
            413,
            "BAD_REQUEST",
        )


# --- malformed and invalid requests -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"job_name": "x",}', b'{"job_name": "x"', b'{"job_name": "\xff\xfe"}', b"[" * 100_000],
    ids=["garbage", "trailing-comma", "truncated", "bad-utf8", "deeply-nested"],
)
def test_malformed_json_is_400(shared_server: ServerHandle, keys: Keys, raw: bytes) -> None:
    with shared_server.http(keys.user) as http:
        expect_error(http.post("/v1/tasks", content=raw, headers=JSON), 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_name": "has space"}, "job_name"),
        ({"job_name": "x" * 65}, "job_name"),
        ({}, "job_name"),
        ({"job_name": "ok", "priority": 0}, "priority"),
        ({"job_name": "ok", "priority": 11}, "priority"),
        ({"job_name": "ok", "gpu": -1}, "gpu"),
        ({"job_name": "ok", "cpu": 10**20}, "cpu"),
        ({"job_name": "ok", "memory_gb": -5}, "memory_gb"),
        ({"job_name": "ok", "node_count": 0}, "node_count"),
        (
            {
                "job_name": "ok",
                "dataset_specs": [{"name": "d", "source": "/d", "sha256": "abc", "mount_path": "d"}],
            },
            "sha256",
        ),
    ],
)
def test_validation_error_names_the_field(
    shared_server: ServerHandle, keys: Keys, body: dict, field: str
) -> None:
    with shared_server.http(keys.user) as http:
        err = expect_error(http.post("/v1/tasks", json=body), 422, "VALIDATION_ERROR")
    assert field in err["error"], err


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 2**63}, "offset"),
        ({"status": "exploded"}, "status"),
    ],
)
def test_query_validation_names_the_parameter(
    shared_server: ServerHandle, keys: Keys, params: dict, field: str
) -> None:
    """A bad parameter is 400 BAD_REQUEST, as the contract declares for GET /v1/tasks (a bad
    body stays 422)."""
    with shared_server.http(keys.user) as http:
        err = expect_error(http.get("/v1/tasks", params=params), 400, "BAD_REQUEST")
    assert field in err["error"], err


def test_query_validation_uses_the_public_parameter_name(shared_server: ServerHandle, keys: Keys) -> None:
    """`from` is declared in Python under another name; the message must say `from`."""
    with shared_server.http(keys.admin) as http:
        err = expect_error(
            http.get("/v1/audit/events", params={"from": "yesterday"}), 400, "BAD_REQUEST"
        )
        assert "from" in err["error"] and "start" not in err["error"], err
        err = expect_error(http.get("/v1/audit/events", params={"to": "soon"}), 400, "BAD_REQUEST")
        assert "to:" in err["error"] and "end" not in err["error"], err


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'"job"', b"42"])
def test_body_that_is_not_an_object_is_422(shared_server: ServerHandle, keys: Keys, raw: bytes) -> None:
    with shared_server.http(keys.user) as http:
        expect_error(http.post("/v1/tasks", content=raw, headers=JSON), 422, "VALIDATION_ERROR")


def test_deep_json_that_parses_is_refused_before_it_is_stored(
    shared_server: ServerHandle, keys: Keys
) -> None:
    """Nesting the parser accepts but the response encoder cannot write back must never be stored:
    it would answer 500 after committing, and poison every later listing."""
    settings = "[" * 600 + "]" * 600
    raw = ('{"job_name":"deep","plugin_configs":{"p":{"settings":{"a":' + settings + "}}}}").encode()
    with shared_server.http(keys.user) as http:
        before = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
        err = expect_error(http.post("/v1/tasks", content=raw, headers=JSON), 422, "VALIDATION_ERROR")
        assert "settings" in err["error"]
        listed = http.get("/v1/tasks", params={"limit": 1000})
        assert listed.status_code == 200 and listed.json()["total"] == before


def test_large_offsets_are_not_internal_errors(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        for path in ("/v1/tasks", "/v1/experiments", "/v1/audit/events"):
            assert http.get(path, params={"offset": 2**31 - 1}).status_code == 200
            expect_error(http.get(path, params={"offset": 2**63}), 400, "BAD_REQUEST")


# --- 500 ----------------------------------------------------------------------------------------


def test_internal_error_is_an_envelope_without_internals(shared_server: ServerHandle, keys: Keys) -> None:
    """A row the code cannot read (corrupted behind the server's back) gives a clean 500."""
    with shared_server.http(keys.user) as http:
        task_id = http.post("/v1/tasks", json={"job_name": "to-corrupt"}).json()["id"]
        shared_server.db_exec("UPDATE tasks SET status = 'exploded' WHERE id = ?", (task_id,))
        try:
            err = expect_error(http.get(f"/v1/tasks/{task_id}"), 500, "INTERNAL_ERROR")
        finally:
            shared_server.db_exec("UPDATE tasks SET status = 'queued' WHERE id = ?", (task_id,))
        assert err["error"] == "An error occurred"
        assert http.get(f"/v1/tasks/{task_id}").status_code == 200
    log = wait_for_log(shared_server, f"trace_id={err['trace_id']}")
    # The details go to the server log, with the trace id that ties them to the response.
    assert f"unhandled error trace_id={err['trace_id']}" in log
    assert "Traceback" in log


# --- trace ids ----------------------------------------------------------------------------------


def test_trace_id_is_in_header_body_and_log_for_each_error_kind(
    shared_server: ServerHandle, keys: Keys
) -> None:
    cases = []
    with shared_server.http() as anon:
        cases.append(("GET", "/v1/tasks", expect_error(anon.get("/v1/tasks"), 401, "UNAUTHORIZED")))
        cases.append(("GET", "/nowhere", expect_error(anon.get("/nowhere"), 404, "NOT_FOUND")))
    with shared_server.http(keys.worker) as worker:
        cases.append(("GET", "/v1/queue", expect_error(worker.get("/v1/queue"), 403, "FORBIDDEN")))
    with shared_server.http(keys.user) as http:
        cases.append(("PUT", "/v1/queue", expect_error(http.put("/v1/queue"), 405, "BAD_REQUEST")))
        r = http.post("/v1/tasks", content=b"{", headers=JSON)
        cases.append(("POST", "/v1/tasks", expect_error(r, 400, "BAD_REQUEST")))
        r = http.post("/v1/tasks", json={"job_name": "no spaces allowed"})
        cases.append(("POST", "/v1/tasks", expect_error(r, 422, "VALIDATION_ERROR")))
        r = http.get("/v1/tasks/does-not-exist")
        cases.append(("GET", "/v1/tasks/does-not-exist", expect_error(r, 404, "NOT_FOUND")))
        r = http.post("/v1/tasks", content=padded_task(MIB + 10), headers=JSON)
        cases.append(("POST", "/v1/tasks", expect_error(r, 413, "BAD_REQUEST")))

    trace_ids = [body["trace_id"] for _, _, body in cases]
    assert len(set(trace_ids)) == len(trace_ids), "trace ids must be unique per request"
    for method, path, body in cases:
        log = wait_for_log(shared_server, f"trace_id={body['trace_id']}")
        line = next(
            ln for ln in log.splitlines() if f"trace_id={body['trace_id']}" in ln and " fetchml.access " in ln
        )
        assert f"{method} {path} " in line, line


def test_successful_responses_carry_a_trace_id_too(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        r = http.get("/v1/queue")
    assert r.status_code == 200
    trace_id = r.headers["x-trace-id"]
    log = wait_for_log(shared_server, f"trace_id={trace_id}")
    line = next(ln for ln in log.splitlines() if f"trace_id={trace_id}" in ln)
    assert "GET /v1/queue 200" in line and "user=alice" in line


def test_client_cannot_choose_the_trace_id(shared_server: ServerHandle) -> None:
    with shared_server.http() as http:
        r = http.get("/v1/tasks", headers={"X-Trace-Id": "spoofed"})
    body = expect_error(r, 401, "UNAUTHORIZED")
    assert body["trace_id"] != "spoofed"
