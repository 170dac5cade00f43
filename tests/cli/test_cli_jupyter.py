"""`fetchml jupyter start | list | show | stop | open` as subprocesses against a real server.

Most services here stay queued (`starting` with a pending reason): they ask for a GPU type no
worker has. The wait of `start` is driven to its end by playing the worker by hand (the worker
protocol's service half, through the client), so no Jupyter runs; a real one is the e2e tests'.
`open` is driven through the server's real proxy to a small HTTP server standing in for Jupyter.
"""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fetchml.core.jupyter import JupyterService, ServiceReport, StartJupyterRequest
from tests.cli.conftest import (
    Result,
    assert_ok,
    assert_one_line_error,
    cli_env,
    run,
    unreachable_url,
)
from tests.harness import REPO, Keys, ServerHandle
from tests.protocol_kit import FakeWorker, unique

Cli = Callable[..., Result]
NOWHERE = ["--gpu", "1", "--gpu-type", "NOSUCHGPU"]  # queued for good: no worker has one
STARTING_RE = re.compile(r"^Starting service (\S+) \(([\w-]+)\); `fetchml jupyter show \1` follows it$")


@pytest.fixture
def started(shared_server: ServerHandle, keys: Keys) -> Iterator[list[tuple[str, str]]]:
    """(key, service id) of what a test started; every one still live is stopped afterwards."""
    made: list[tuple[str, str]] = []
    yield made
    with shared_server.client(keys.admin) as c:
        for _, sid in made:
            if c.jupyter.get(sid).status.value in ("starting", "running"):
                c.jupyter.stop(sid)


def start_direct(server: ServerHandle, key: str, name: str, **fields: Any) -> JupyterService:
    fields.setdefault("gpu", 1)
    fields.setdefault("gpu_type", "NOSUCHGPU")
    with server.client(key) as c:
        return c.jupyter.start(StartJupyterRequest(name=name, **fields))


def test_help() -> None:
    out = assert_ok(run(["jupyter", "--help"], cli_env())).stdout
    for cmd in ("start", "list", "show", "stop", "open"):
        assert f" {cmd} " in out, out
    out = assert_ok(run(["jupyter", "start", "--help"], cli_env())).stdout
    assert "--idle-timeout" in out and "--no-wait" in out and "--gpu-type" in out


def test_start_no_wait_list_show_stop(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    name = unique("nb")
    args = ["jupyter", "start", name, *NOWHERE, "--cpu", "2", "--memory-gb", "4", "--image", "lab/jupyter:1",
            "--workspace", "ws1", "--idle-timeout", "30", "--no-wait", "--json"]  # fmt: skip
    r = assert_ok(cli(args, keys.user))
    svc = json.loads(r.stdout)  # the whole of stdout is the JupyterService
    started.append((keys.user, svc["id"]))
    assert (svc["name"], svc["status"], svc["user_id"]) == (name, "starting", "alice")
    assert (svc["gpu"], svc["gpu_type"], svc["cpu"], svc["memory_gb"]) == (1, "NOSUCHGPU", 2, 4)
    assert (svc["image"], svc["workspace"], svc["idle_timeout_minutes"]) == ("lab/jupyter:1", "ws1", 30)
    assert svc["proxy_path"] == f"/v1/jupyter/services/{svc['id']}/proxy/"

    # The human form: one line with the id.
    second = unique("nb")
    out = assert_ok(cli(["jupyter", "start", second, *NOWHERE, "--no-wait"], keys.user)).stdout
    match = STARTING_RE.match(out.strip())
    assert match and match[2] == second, out
    sid2 = match[1]
    started.append((keys.user, sid2))

    listed = json.loads(assert_ok(cli(["jupyter", "list", "--json"], keys.user)).stdout)
    assert {svc["id"], sid2} <= {s["id"] for s in listed}
    table = assert_ok(cli(["jupyter", "list"], keys.user)).stdout
    row = next(line for line in table.splitlines() if line.startswith(svc["id"]))
    assert name in row and "alice" in row and "starting" in row, row
    assert table.splitlines()[0].split() == [
        "ID",
        "NAME",
        "USER",
        "STATUS",
        "WORKER",
        "GPUS",
        "AGE",
        "URL",
        "/",
        "WHY",
    ]

    shown = assert_ok(cli(["jupyter", "show", svc["id"]], keys.user)).stdout
    for part in (svc["id"], name, "starting", "lab/jupyter:1", "gpu 1 x NOSUCHGPU", "30 min", "pending"):
        assert part in shown, (part, shown)
    assert f"{shared_server.url}/v1/jupyter/services/{svc['id']}/proxy/" in shown
    again = json.loads(assert_ok(cli(["jupyter", "show", svc["id"], "--json"], keys.user)).stdout)
    assert again["id"] == svc["id"] and again["status"] == "starting" and again.get("pending_reason")

    # Stop: a queued service is stopped at once; again it is CONFLICT with a hint.
    assert assert_ok(cli(["jupyter", "stop", svc["id"]], keys.user)).stdout == f"Stopping {svc['id']}\n"
    line = assert_one_line_error(cli(["jupyter", "stop", svc["id"]], keys.user), "CONFLICT", 1)
    assert f"fetchml jupyter show {svc['id']}" in line
    # `--wait` returns once it has stopped.
    out = assert_ok(cli(["jupyter", "stop", sid2, "--wait"], keys.user)).stdout
    assert out == f"Stopped {sid2}\n"
    with shared_server.client(keys.user) as c:
        assert c.jupyter.get(sid2).status.value == "stopped"

    # Ended services leave the default list; --all shows them.
    live = {s["id"] for s in json.loads(assert_ok(cli(["jupyter", "list", "--json"], keys.user)).stdout)}
    assert svc["id"] not in live and sid2 not in live
    every = json.loads(assert_ok(cli(["jupyter", "list", "--all", "--json"], keys.user)).stdout)
    assert {s["id"]: s["status"] for s in every if s["id"] in (svc["id"], sid2)} == {
        svc["id"]: "stopped",
        sid2: "stopped",
    }
    assert svc["id"] in assert_ok(cli(["jupyter", "list", "--all"], keys.user)).stdout


def test_admins_see_every_service_users_their_own(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    mine = start_direct(shared_server, keys.user, unique("alice"))
    started.append((keys.user, mine.id))
    admin_ids = {
        s["id"] for s in json.loads(assert_ok(cli(["jupyter", "list", "--json"], keys.admin)).stdout)
    }
    bob_ids = {s["id"] for s in json.loads(assert_ok(cli(["jupyter", "list", "--json"], keys.other)).stdout)}
    assert mine.id in admin_ids and mine.id not in bob_ids
    # Someone else's service: FORBIDDEN with a hint, for show and stop alike.
    line = assert_one_line_error(cli(["jupyter", "show", mine.id], keys.other), "FORBIDDEN", 1)
    assert "owner or an admin" in line
    assert_one_line_error(cli(["jupyter", "stop", mine.id], keys.other), "FORBIDDEN", 1)
    # An admin may stop it.
    assert_ok(cli(["jupyter", "stop", mine.id, "--wait", "--timeout", "10"], keys.admin))


def test_errors_are_one_line(cli: Cli, keys: Keys) -> None:
    missing = "0" * 32
    line = assert_one_line_error(cli(["jupyter", "show", missing], keys.user), "NOT_FOUND", 1)
    assert "fetchml jupyter list --all" in line
    assert_one_line_error(cli(["jupyter", "stop", missing], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["jupyter", "open", missing, "--no-browser"], keys.user), "NOT_FOUND", 1)
    # Checked before anything is sent: exit 2.
    line = assert_one_line_error(cli(["jupyter", "start", "bad name!"], keys.user), "VALIDATION_ERROR", 2)
    assert "name" in line
    assert_one_line_error(cli(["jupyter", "start", "ok", "--gpu", "-1"], keys.user), "VALIDATION_ERROR", 2)
    assert_one_line_error(cli(["jupyter", "list"]), "UNAUTHORIZED", 1)
    r = run(["jupyter", "list"], cli_env(key=keys.user, FETCHML_SERVER_URL=unreachable_url()))
    assert_one_line_error(r, "SERVER_UNREACHABLE", 1)


def test_open_refuses_a_service_that_is_not_running(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    svc = start_direct(shared_server, keys.user, unique("nb"))
    started.append((keys.user, svc.id))
    line = assert_one_line_error(cli(["jupyter", "open", svc.id, "--no-browser"], keys.user), "CONFLICT", 1)
    assert "starting, not running" in line and f"fetchml jupyter show {svc.id}" in line


def test_start_times_out_while_queued(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    name = unique("slow")
    r = cli(["jupyter", "start", name, *NOWHERE, "--timeout", "1.5", "--json"], keys.user)
    assert r.returncode == 1, r
    svc = json.loads(r.stdout)  # --json: the service as last read
    started.append((keys.user, svc["id"]))
    assert svc["status"] == "starting" and svc["name"] == name
    assert "still starting after 1.5s" in r.stderr and f"fetchml jupyter show {svc['id']}" in r.stderr
    # Not a terminal: each change of state is one line on stderr, no spinner.
    assert f"service {svc['id']} ({name}): starting" in r.stderr and "Traceback" not in r.stderr


class HandWorker:
    """A worker with one GPU of its own type and a service slot, driven by hand."""

    def __init__(self, server: ServerHandle, key: str) -> None:
        self.gpu_type = unique("JG")
        self.w = FakeWorker(server, key)
        self.w.register(gpus=[0], gpu_type=self.gpu_type, service_slots=1)

    def take(self, timeout: float = 20.0) -> str:
        """Claim until the service waiting for this worker's GPU comes; its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.w.client.jupyter_workers.claim(self.w.name, [], wait=2)
            if out.start:
                return out.start[0].id
        raise AssertionError(f"no service for {self.w.name} within {timeout}s")

    def report(self, sid: str, **kw: Any) -> None:
        self.w.client.jupyter_workers.report(self.w.name, sid, ServiceReport(**kw))


def _start_in_background(cli: Cli, key: str, args: list[str]) -> tuple[ThreadPoolExecutor, Future[Result]]:
    pool = ThreadPoolExecutor(1)
    return pool, pool.submit(cli, args, key)


@pytest.mark.timeout(120)
def test_start_waits_until_running_and_prints_url_and_token(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    hw = HandWorker(shared_server, keys.worker)
    name = unique("lab")
    pool, fut = _start_in_background(
        cli, keys.user, ["jupyter", "start", name, "--gpu", "1", "--gpu-type", hw.gpu_type]
    )
    try:
        sid = hw.take()
        started.append((keys.user, sid))
        url = f"http://{hw.w.name}:8890/v1/jupyter/services/{sid}/proxy/"
        hw.report(sid, status="running", url=url)
        r = assert_ok(fut.result(timeout=60))
    finally:
        pool.shutdown(wait=False)
    with shared_server.client(keys.user) as c:
        svc = c.jupyter.get(sid)
    assert svc.token
    out = r.stdout
    assert f"Service {sid} ({name}) is running on {hw.w.name} (GPUs 0)" in out, out
    assert f"url:    {url}" in out and f"token:  {svc.token}" in out
    assert f"proxy:  {shared_server.url}/v1/jupyter/services/{sid}/proxy/" in out
    assert f"fetchml jupyter open {sid}" in out
    hw.w.close()


@pytest.mark.timeout(120)
def test_start_that_fails_exits_1_with_its_error_and_log(
    cli: Cli, shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    hw = HandWorker(shared_server, keys.worker)
    name = unique("bad")
    args = ["jupyter", "start", name, "--gpu", "1", "--gpu-type", hw.gpu_type, "--json"]
    pool, fut = _start_in_background(cli, keys.user, args)
    try:
        sid = hw.take()
        started.append((keys.user, sid))
        hw.report(sid, status="error", error="jupyter exited with code 1",
                  log_tail=["starting the server", "No module named 'jupyter_server'"])  # fmt: skip
        r = fut.result(timeout=60)
    finally:
        pool.shutdown(wait=False)
    assert r.returncode == 1, r
    svc = json.loads(r.stdout)  # --json: still the final JupyterService
    assert svc["id"] == sid and svc["status"] == "error"
    assert f"error: service {sid} ({name}) failed: jupyter exited with code 1" in r.stderr
    assert "  No module named 'jupyter_server'" in r.stderr
    shown = assert_ok(cli(["jupyter", "show", sid], keys.user)).stdout
    assert "jupyter exited with code 1" in shown and "No module named 'jupyter_server'" in shown
    hw.w.close()


class FakeJupyter:
    """An HTTP server standing in for Jupyter: answers under the service's base URL, and only
    to requests that carry its token the way the server's proxy sends it."""

    def __init__(self, token: str) -> None:
        outer = self
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append(self.path)
                ok = self.headers.get("Authorization") == f"token {token}"
                body = b"hello from fake jupyter" if ok else b"no token"
                self.send_response(200 if ok else 403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(120)
def test_open_forwards_a_local_port_until_ctrl_c(
    shared_server: ServerHandle, keys: Keys, started: list[tuple[str, str]]
) -> None:
    hw = HandWorker(shared_server, keys.worker)
    svc = start_direct(shared_server, keys.user, unique("fwd"), gpu_type=hw.gpu_type)
    started.append((keys.user, svc.id))
    assert hw.take() == svc.id
    assert svc.token
    fake = FakeJupyter(svc.token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fetchml", "jupyter", "open", svc.id, "--no-browser"],
        env=cli_env(shared_server, keys.user),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        hw.report(svc.id, status="running", url=f"http://127.0.0.1:{fake.port}{svc.proxy_path}")
        assert proc.stdout is not None
        first = proc.stdout.readline()  # bounded by the test's timeout
        match = re.match(rf"^Service {svc.id} \([\w-]+\) at (http://127\.0\.0\.1:\d+/\S*)$", first.strip())
        assert match, (first, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        url = match[1]
        assert "token" not in url  # the server adds it upstream
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200 and r.text == "hello from fake jupyter", (r.status_code, r.text)
        assert fake.seen and fake.seen[-1].startswith(svc.proxy_path)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        fake.close()
        hw.w.close()
    assert proc.returncode == 0, err
    assert "forward stopped" in err and "Traceback" not in err
