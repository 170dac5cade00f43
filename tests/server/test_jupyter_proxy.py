"""The Jupyter proxy (/v1/jupyter/services/{id}/proxy/...) and `fetchml jupyter open`'s local
forward, over real sockets: a real fetchml server, a real Jupyter server (jupyter_server, started
as the worker would: the service's base URL and token) and a hand-driven worker that reports the
service running at it.

One Jupyter server serves the whole module. Other services point at a dead port (502) or at a
small recording HTTP server (what the proxy sends upstream).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from fetchml.cli.jupyter_forward import run_forward
from fetchml.core.errors import ValidationError
from fetchml.core.jupyter import ServiceReport, StartJupyterRequest, proxy_path
from tests.backends import SQLITE
from tests.harness import Keys, ServerHandle, ServerPool, die_with_parent, expect_error, free_port, make_keys
from tests.jupyter_kit import WAIT, execute_request, kernel_round_trip, ws_of
from tests.protocol_kit import FakeWorker
from tests.server.test_websocket import expect_denial

pytestmark = pytest.mark.timeout(180)

MAX_BODY = 4 * 1024 * 1024  # the proxy's body limit on this module's server


@dataclass
class World:
    srv: ServerHandle
    keys: Keys
    worker: FakeWorker
    service_id: str  # alice's, running at the real Jupyter server
    token: str
    running: list[str]
    jupyter_url: str = ""  # the service's own URL (the worker's address)  # services the worker reported running (its claims list them)


def _claim(world: World, service_id: str) -> str:
    """The worker takes the service's start; its token."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        out = world.worker.client.jupyter_workers.claim(world.worker.name, world.running, wait=2)
        for start in out.start:
            if start.id == service_id:
                assert start.base_url == proxy_path(service_id)
                return start.token
    raise AssertionError(f"service {service_id} was never handed to the worker")


def _report_running(world: World, service_id: str, url: str) -> None:
    world.worker.client.jupyter_workers.report(
        world.worker.name, service_id, ServiceReport(status="running", url=url)
    )
    world.running.append(service_id)


def _new_service(world: World, key: str, name: str) -> str:
    with world.srv.client(key) as c:
        return c.jupyter.start(StartJupyterRequest(name=name)).id


def _start_jupyter(root: Path, base_url: str, token: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    home = root / "home"
    (home / "work").mkdir(parents=True)
    log = root / "jupyter.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "JUPYTER_TOKEN": token,
        # Nothing of the machine's own Jupyter setup.
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--port-retries=0",
            "--no-browser",
            "--allow-root",  # CI containers run tests as root
            f"--ServerApp.base_url={base_url}",
            f"--ServerApp.root_dir={home / 'work'}",
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}{base_url}api/status"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter_server exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                return proc, port, log
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"jupyter_server did not answer in 60 s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pool = ServerPool(SQLITE)
    jupyter: subprocess.Popen[bytes] | None = None
    worker: FakeWorker | None = None
    try:
        srv = pool.handle(
            tmp_path_factory.mktemp("jproxy"),
            {
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000",
                # The hand-driven worker sends no heartbeats: it must not be declared lost.
                "FETCHML_HEARTBEAT_TIMEOUT": "3600",
                "FETCHML_JUPYTER_PROXY_MAX_BODY_BYTES": str(MAX_BODY),
            },
        ).start()
        keys = make_keys(srv)
        worker = FakeWorker(srv, keys.worker)
        worker.register(service_slots=16)
        w = World(srv, keys, worker, "", "", [])
        w.service_id = _new_service(w, keys.user, "nb")
        w.token = _claim(w, w.service_id)
        jupyter, port, _ = _start_jupyter(
            tmp_path_factory.mktemp("jupyter"), proxy_path(w.service_id), w.token
        )
        w.jupyter_url = f"http://127.0.0.1:{port}{proxy_path(w.service_id)}"
        _report_running(w, w.service_id, w.jupyter_url)
        yield w
    finally:
        if jupyter is not None:
            jupyter.terminate()
            try:
                jupyter.wait(10)
            except subprocess.TimeoutExpired:
                jupyter.kill()
                jupyter.wait(5)
        if worker is not None:
            worker.close()
        pool.close()


def proxy_url(world: World, service_id: str | None = None) -> str:
    return world.srv.url + proxy_path(service_id or world.service_id)


# --- through the server's proxy --------------------------------------------------------------


def test_status_through_the_proxy(world: World) -> None:
    for key in (world.keys.user, world.keys.admin):
        r = httpx.get(proxy_url(world) + "api/status", headers={"X-API-Key": key}, timeout=WAIT)
        assert r.status_code == 200, r.text
        assert "started" in r.json()
        assert r.headers.get("x-trace-id")
    # Jupyter's answers keep their own CSP (ours, default-src 'none', would stop its pages' scripts).
    direct = httpx.get(world.jupyter_url + "api/status", headers={"Authorization": f"token {world.token}"})
    assert r.headers["content-security-policy"] == direct.headers["content-security-policy"]
    assert r.headers.get("x-content-type-options") == "nosniff"


def test_base_url_itself_is_proxied(world: World) -> None:
    """The service's root (with and without its slash) answers as Jupyter does: the same path
    on both sides, so its redirects need no rewriting."""
    auth = {"Authorization": f"token {world.token}"}
    for suffix in ("", "/"):
        direct = httpx.get(world.jupyter_url.rstrip("/") + suffix, headers=auth, timeout=WAIT)
        proxied = httpx.get(
            proxy_url(world).rstrip("/") + suffix, headers={"X-API-Key": world.keys.user}, timeout=WAIT
        )
        assert proxied.status_code == direct.status_code, (suffix, proxied.text)
        assert proxied.headers.get("location") == direct.headers.get("location")


def test_kernel_round_trip_over_the_proxy(world: World) -> None:
    kernel_round_trip(proxy_url(world), {"X-API-Key": world.keys.user})


def test_kernel_round_trip_with_the_key_as_subprotocol(world: World) -> None:
    """The browser's way: the key offered as a subprotocol, never passed on to Jupyter."""
    with httpx.Client(headers={"X-API-Key": world.keys.user}, timeout=WAIT) as http:
        kernel_id = http.post(proxy_url(world) + "api/kernels", json={"name": "python3"}).json()["id"]
        try:
            with connect(
                # JupyterLab may put its token in WebSocket URLs: never passed on, never logged.
                ws_of(proxy_url(world))
                + f"api/kernels/{kernel_id}/channels?session_id=s1&token={world.token}",
                subprotocols=[Subprotocol("fetchml.key." + world.keys.user)],
                open_timeout=WAIT,
                close_timeout=2,
            ) as ws:
                assert ws.subprotocol is None  # Jupyter was offered none
                msg_id = uuid.uuid4().hex
                ws.send(json.dumps(execute_request(msg_id, "6*7")))
                deadline = time.monotonic() + WAIT
                for _ in range(1000):
                    message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                    if (
                        message["parent_header"].get("msg_id") == msg_id
                        and message["msg_type"] == "execute_result"
                    ):
                        assert message["content"]["data"]["text/plain"] == "42"
                        break
        finally:
            http.delete(proxy_url(world) + f"api/kernels/{kernel_id}")


def test_another_users_service_is_forbidden(world: World) -> None:
    r = httpx.get(proxy_url(world) + "api/status", headers={"X-API-Key": world.keys.other}, timeout=WAIT)
    expect_error(r, 403, "FORBIDDEN")
    with pytest.raises(InvalidStatus) as info:
        connect(
            ws_of(proxy_url(world)) + "api/events/subscribe",
            additional_headers={"X-API-Key": world.keys.other},
            open_timeout=WAIT,
        )
    expect_denial(info.value, 403, "FORBIDDEN")


def test_worker_keys_are_refused(world: World) -> None:
    r = httpx.get(proxy_url(world) + "api/status", headers={"X-API-Key": world.worker.key}, timeout=WAIT)
    expect_error(r, 403, "FORBIDDEN")


def test_no_key_is_unauthorized(world: World) -> None:
    expect_error(httpx.get(proxy_url(world) + "api/status", timeout=WAIT), 401, "UNAUTHORIZED")
    expect_error(httpx.post(proxy_url(world) + "api/kernels", timeout=WAIT), 401, "UNAUTHORIZED")
    with pytest.raises(InvalidStatus) as info:
        # Refused with Jupyter's token in the URL: still no log line shows it (see the last test).
        connect(ws_of(proxy_url(world)) + f"api/events/subscribe?token={world.token}", open_timeout=WAIT)
    expect_denial(info.value, 401, "UNAUTHORIZED")


def test_jupyter_token_is_not_enough(world: World) -> None:
    """The proxy is fetchml's: Jupyter's token alone does not open it."""
    r = httpx.get(
        proxy_url(world) + "api/status", headers={"Authorization": f"token {world.token}"}, timeout=WAIT
    )
    expect_error(r, 401, "UNAUTHORIZED")


def test_unknown_and_not_running_services(world: World) -> None:
    headers = {"X-API-Key": world.keys.user}
    r = httpx.get(world.srv.url + proxy_path("nope") + "api/status", headers=headers, timeout=WAIT)
    expect_error(r, 404, "NOT_FOUND")
    queued = _new_service(world, world.keys.user, "waiting")
    r = httpx.get(proxy_url(world, queued) + "api/status", headers=headers, timeout=WAIT)
    expect_error(r, 409, "CONFLICT")


def test_upstream_down_is_502(world: World) -> None:
    dead = _new_service(world, world.keys.user, "dead")
    _claim(world, dead)
    _report_running(world, dead, f"http://127.0.0.1:{free_port()}{proxy_path(dead)}")
    headers = {"X-API-Key": world.keys.user}
    body = expect_error(
        httpx.get(proxy_url(world, dead) + "api/status", headers=headers, timeout=WAIT),
        502,
        "SERVICE_UNAVAILABLE",
    )
    with pytest.raises(InvalidStatus) as info:
        connect(
            ws_of(proxy_url(world, dead)) + "api/events/subscribe",
            additional_headers=headers,
            open_timeout=WAIT,
        )
    expect_denial(info.value, 502, "SERVICE_UNAVAILABLE")
    assert "127.0.0.1" not in body["error"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/latest/meta-data/",  # not the service's base path
        "http://127.0.0.1:{port}/",
        "file:///etc/passwd{base}",
    ],
)
def test_reported_address_outside_the_base_path_is_not_used(world: World, url: str) -> None:
    sid = _new_service(world, world.keys.user, f"odd-{uuid.uuid4().hex[:6]}")
    _claim(world, sid)
    # Its port answers: were the address used, the request would get through.
    port = world.jupyter_url.split(":")[2].split("/")[0]
    with pytest.raises(ValidationError, match="base_url"):  # refused, nothing stored
        _report_running(world, sid, url.format(port=port, base=proxy_path(sid)))
    r = httpx.get(proxy_url(world, sid) + "api/status", headers={"X-API-Key": world.keys.user}, timeout=WAIT)
    expect_error(r, 409, "CONFLICT")  # still starting: the address was never taken
    with world.srv.client(world.keys.user) as c:
        c.jupyter.stop(sid)


def test_large_upload_streams_past_the_json_limit(world: World) -> None:
    """Notebook uploads go past the 1 MiB JSON body limit, up to the proxy's own."""
    headers = {"X-API-Key": world.keys.user}
    text = "x" * (2 * 1024 * 1024)
    url = proxy_url(world) + "api/contents/big.txt"
    with httpx.Client(headers=headers, timeout=WAIT) as http:
        r = http.put(url, json={"type": "file", "format": "text", "content": text})
        assert r.status_code in (200, 201), r.text
        back = http.get(url, params={"content": "1", "format": "text", "type": "file"})
        assert back.status_code == 200 and back.json()["content"] == text
        too_big = b"y" * (MAX_BODY + 1)
        expect_error(http.put(url, content=too_big), 413, "BAD_REQUEST")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(5):
                yield b"z" * (1024 * 1024)

        r = http.put(url, content=chunks())
        assert r.status_code == 413, r.text


# --- what goes upstream ----------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {"path": self.path, "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body}
        )
        out = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Content-Security-Policy", "frame-ancestors 'self'")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_what_the_proxy_sends_upstream(world: World) -> None:
    recorder = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        sid = _new_service(world, world.keys.user, "recorded")
        token = _claim(world, sid)
        upstream = f"127.0.0.1:{recorder.server_address[1]}"
        _report_running(world, sid, f"http://{upstream}{proxy_path(sid)}")
        r = httpx.post(
            proxy_url(world, sid) + "api/contents/a%2Fb%20c.ipynb?x=1&token=t0k&y=%2F",
            headers={
                "X-API-Key": world.keys.user,
                "Origin": "http://evil.example",
                "Authorization": "token guessed",
                "X-Custom": "kept",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
            content=b"payload",
            timeout=WAIT,
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-security-policy"] == "frame-ancestors 'self'"
        seen = _Recorder.seen[-1]
        assert seen["path"] == proxy_path(sid) + "api/contents/a%2Fb%20c.ipynb?x=1&y=%2F"
        assert seen["body"] == b"payload"
        headers = dict(seen["headers"])
        assert "x-api-key" not in headers and "origin" not in headers and "x-hop" not in headers
        assert [v for k, v in seen["headers"] if k == "authorization"] == [f"token {token}"]
        assert headers["host"] == upstream
        assert headers["x-custom"] == "kept"
        # Dot segments cannot climb out of the service's base URL.
        r = httpx.get(
            proxy_url(world, sid) + "a/%2e%2e/%2e%2e/x", headers={"X-API-Key": world.keys.user}, timeout=WAIT
        )
        expect_error(r, 400, "BAD_REQUEST")
    finally:
        recorder.shutdown()
        recorder.server_close()


@dataclass
class _WsRecorder:
    """A WebSocket upstream: echoes, closes with 4001 on "bye", notes what it was sent."""

    handshakes: list[dict[str, Any]]
    ended: threading.Event

    def handler(self, ws: Any) -> None:
        self.handshakes.append(
            {
                "path": ws.request.path,
                "headers": [(k.lower(), v) for k, v in ws.request.headers.raw_items()],
                "subprotocol": ws.subprotocol,
            }
        )
        try:
            for message in ws:
                if message == "bye":
                    ws.close(4001, "bye")
                    return
                ws.send(message)
        finally:
            self.ended.set()


def test_websocket_relay(world: World) -> None:
    """Subprotocols (less fetchml's own), messages both ways, text and binary, and a close on
    either side closing the other; no key, no Origin upstream, the service's token instead."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve

    rec = _WsRecorder([], threading.Event())
    upstream = serve(
        rec.handler, "127.0.0.1", 0, subprotocols=[Subprotocol("v1.kernel.websocket.jupyter.org")]
    )
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        sid = _new_service(world, world.keys.user, "wsrec")
        token = _claim(world, sid)
        _report_running(world, sid, f"http://127.0.0.1:{upstream.socket.getsockname()[1]}{proxy_path(sid)}")
        url = ws_of(proxy_url(world, sid)) + "api/kernels/k1/channels?session_id=s"
        with connect(
            url,
            additional_headers={"X-API-Key": world.keys.user},
            origin="http://evil.example",  # type: ignore[arg-type]
            subprotocols=[Subprotocol("fetchml"), Subprotocol("v1.kernel.websocket.jupyter.org")],
            open_timeout=WAIT,
        ) as ws:
            assert ws.subprotocol == "v1.kernel.websocket.jupyter.org"
            ws.send("hello")
            assert ws.recv(timeout=WAIT) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=WAIT) == b"\x00\x01"
            ws.send("bye")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=WAIT)
            assert ws.close_code == 4001 and ws.close_reason == "bye"
        seen = rec.handshakes[-1]
        assert seen["path"] == proxy_path(sid) + "api/kernels/k1/channels?session_id=s"
        headers = dict(seen["headers"])
        assert "x-api-key" not in headers and "origin" not in headers
        assert headers["authorization"] == f"token {token}"
        assert headers["sec-websocket-protocol"] == "v1.kernel.websocket.jupyter.org"
        # The client leaves: the upstream socket ends too.
        rec.ended.clear()
        with connect(
            url,
            additional_headers={"X-API-Key": world.keys.user},
            subprotocols=[Subprotocol("v1.kernel.websocket.jupyter.org")],
            open_timeout=WAIT,
        ) as ws:
            ws.send("ping")
            assert ws.recv(timeout=WAIT) == "ping"
        assert rec.ended.wait(WAIT), "the upstream socket stayed open after the client left"
        # The upstream's own refusal is relayed as it answered.
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers={"X-API-Key": world.keys.user}, open_timeout=WAIT)
        assert info.value.response.status_code == 400
        assert b"missing subprotocol" in bytes(info.value.response.body or b"")
    finally:
        upstream.shutdown()


def test_tokens_stay_out_of_the_server_log(world: World) -> None:
    assert world.token not in world.srv.log()


# --- the local forward -----------------------------------------------------------------------


@contextlib.contextmanager
def local_forward(world: World, key: str, service_id: str | None = None) -> Iterator[str]:
    ready: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_forward(world.srv.url, key, service_id or world.service_id, on_ready=ready.append, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not ready and not errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready, errors or "the forward did not start"
    try:
        yield ready[0]
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "run_forward did not return after stop"
        assert not errors, errors


def test_local_forward_reaches_jupyter(world: World) -> None:
    with local_forward(world, world.keys.user) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith(proxy_path(world.service_id))
        r = httpx.get(url + "api/status", timeout=WAIT)  # no key: the forward adds it
        assert r.status_code == 200, r.text
        assert "started" in r.json()
        kernel_round_trip(url, {})


def test_local_forward_refuses_other_sites(world: World) -> None:
    with local_forward(world, world.keys.user) as url:
        port = url.split(":")[2].split("/")[0]
        expect_error(
            httpx.get(url + "api/status", headers={"Origin": "http://evil.example"}, timeout=WAIT),
            403,
            "FORBIDDEN",
        )
        # DNS rebinding: a page of another name that resolves to 127.0.0.1.
        expect_error(
            httpx.get(url + "api/status", headers={"Host": f"evil.example:{port}"}, timeout=WAIT),
            403,
            "FORBIDDEN",
        )
        with pytest.raises(InvalidStatus) as info:
            connect(ws_of(url) + "api/events/subscribe", origin="http://evil.example", open_timeout=WAIT)  # type: ignore[arg-type]
        expect_denial(info.value, 403, "FORBIDDEN")
        # Its own origin is fine (the browser's same-origin requests carry it).
        ok = httpx.get(url + "api/status", headers={"Origin": f"http://127.0.0.1:{port}"}, timeout=WAIT)
        assert ok.status_code == 200, ok.text
        # Only the service's path is forwarded.
        expect_error(httpx.get(f"http://127.0.0.1:{port}/v1/tasks", timeout=WAIT), 404, "NOT_FOUND")


def test_local_forward_relays_the_servers_refusals(world: World) -> None:
    with local_forward(world, world.keys.other) as url:
        expect_error(httpx.get(url + "api/status", timeout=WAIT), 403, "FORBIDDEN")
        with pytest.raises(InvalidStatus) as info:
            connect(ws_of(url) + "api/events/subscribe", open_timeout=WAIT)
        expect_denial(info.value, 403, "FORBIDDEN")


def test_local_forward_with_the_server_down() -> None:
    ready: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forward,
        args=(f"http://127.0.0.1:{free_port()}", "k", "abc"),
        kwargs={"on_ready": ready.append, "stop": stop},
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready
        body = expect_error(httpx.get(ready[0] + "api/status", timeout=WAIT), 502, "SERVICE_UNAVAILABLE")
        assert body["trace_id"]
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()


def test_local_forward_returns_on_ctrl_c(tmp_path: Path) -> None:
    """In a CLI's main thread: SIGINT ends the forward and run_forward returns (no traceback)."""
    import signal

    script = (
        "import sys\n"
        "from fetchml.cli.jupyter_forward import run_forward\n"
        "run_forward('http://127.0.0.1:9', 'k', 'abc', on_ready=lambda u: print(u, flush=True))\n"
        "print('returned', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("http://127.0.0.1:"), first
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, out
        assert "returned" in out and "Traceback" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_local_forward_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="API key"):
        run_forward("http://127.0.0.1:1", "k", "abc", host="0.0.0.0")
    with socket.socket() as s:  # an address in use is the caller's error, raised at once
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(OSError):
            run_forward("http://127.0.0.1:1", "k", "abc", port=s.getsockname()[1])
