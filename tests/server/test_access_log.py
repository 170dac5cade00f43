"""The access log with a real server: a line per request whatever the log level, in the logging
module's format, and the lines still waiting in the batch written when the server stops."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.harness import ServerHandle, wait_for_log

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO fetchml\.access 127\.0\.0\.1 (\S+) (\S+) (\d{3}) "
    r"\d+\.\dms trace_id=([0-9a-f-]{36}) user=(\S+)$"
)


def _access_lines(text: str) -> list[tuple[str, ...]]:
    return [m.groups() for line in text.splitlines() if (m := LINE.match(line))]


def test_lines_are_written_at_any_log_level_and_flushed_on_stop(tmp_path: Path) -> None:
    server = ServerHandle(data_dir=tmp_path, env_extra={"FETCHML_LOG_LEVEL": "warning"})
    key = server.make_key("alice", "user")
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as http:
            first = http.get("/v1/tasks")
            assert first.status_code == 200
            trace = first.headers["x-trace-id"]
            # A version-4 UUID, as before the trace ids stopped coming from uuid.uuid4().
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", trace)
            wait_for_log(server, f"trace_id={trace}")
            # The last requests before a stop: still waiting in the batch when SIGTERM arrives.
            last = [http.get("/v1/tasks/" + "0" * 32).headers["x-trace-id"] for _ in range(3)]
    finally:
        server.stop()
    lines = _access_lines(server.log())
    assert ("GET", "/v1/tasks", "200", trace, "alice") in lines
    for t in last:
        assert ("GET", f"/v1/tasks/{'0' * 32}", "404", t, "alice") in lines
    # Nothing else at INFO reached the log: the level still holds for everything but access lines.
    assert not [ln for ln in server.log().splitlines() if " INFO " in ln and " fetchml.access " not in ln]


def test_no_lines_when_the_access_log_is_off(tmp_path: Path) -> None:
    server = ServerHandle(data_dir=tmp_path, env_extra={"FETCHML_ACCESS_LOG": "false"})
    key = server.make_key("alice", "user")
    server.start()
    try:
        r = httpx.get(f"{server.url}/v1/tasks", headers={"X-API-Key": key}, timeout=10)
        assert r.status_code == 200
    finally:
        server.stop()
    assert " fetchml.access " not in server.log()
