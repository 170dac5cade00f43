"""The worker's Jupyter services (fetchml.runner.services) with real Jupyter servers and kernels
through the local executor. The server's half is a small in-test stand-in that queues commands
and keeps reports; tests/e2e/test_jupyter_*.py run the whole thing against a real server."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fetchml.client.api import FetchmlClient
from fetchml.core.jupyter import ServiceClaimResponse
from fetchml.runner.executors.local import LocalExecutor
from fetchml.runner.jupyter import JUPYTER_MISSING, PortPool, parse_port_range, redact
from fetchml.runner.services import _Service
from fetchml.runner.worker import Worker, WorkerConfig
from tests.harness import wait_for
from tests.runner.servicekit import (
    ServerHalf,
    assignment,
    free,
    labelled,
    port_range,
    worker_factory,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Callable[..., tuple[Worker, ServerHalf]]]:
    with worker_factory(tmp_path, executor="local") as make:
        yield make


def start_kernel(url: str | None, token: str) -> None:
    """Starts a python3 kernel on the running Jupyter server at `url`, as its user would."""
    with httpx.Client(trust_env=False, timeout=10) as http:
        r = http.post(f"{url}api/kernels", json={"name": "python3"}, headers={"Authorization": f"token {token}"})
    assert r.status_code == 201, r.text


def test_a_service_runs_answers_with_its_token_and_stops_leaving_nothing(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    w, half = make_worker()
    a = assignment()
    started = time.monotonic()
    half.commands.put(ServiceClaimResponse(start=[a]))
    running = half.wait_report(a.id, "running")
    start_to_200 = time.monotonic() - started
    port = int(running.url.split(":")[2].split("/")[0]) if running.url else 0
    assert running.url == f"http://127.0.0.1:{port}{a.base_url}"
    assert w.cfg.service_ports[0] <= port <= w.cfg.service_ports[1]
    api = f"{running.url}api"
    # Fresh clients: Jupyter answers a token with a login cookie.
    assert httpx.get(f"{api}/status", headers={"Authorization": f"token {a.token}"}).status_code == 200
    assert httpx.get(f"{api}/status").status_code == 403
    assert httpx.get(f"{api}/status", headers={"Authorization": "token wrong"}).status_code == 403
    with httpx.Client(trust_env=False, timeout=10) as http:
        # A kernel: it runs in a session of its own, outside the server's process group.
        r = http.post(
            f"{api}/kernels", json={"name": "python3"}, headers={"Authorization": f"token {a.token}"}
        )
        assert r.status_code == 201, r.text
    procs = wait_for(lambda: len(labelled(a.id)) >= 2 and labelled(a.id), 30, "the kernel process")
    assert len({os.getpgid(p.pid) for p in procs}) >= 2
    # Renewals carry Jupyter's own last_activity; the URL only comes with the first.
    renewal = wait_for(lambda: [r for r in half.of(a.id)[1:] if r.status == "running"], 10, "a renewal")[0]
    assert renewal.url is None and renewal.last_activity is not None
    assert a.id in half.running_seen[-1]
    # Nothing the worker keeps or passes on argv holds the token.
    assert all(a.token not in " ".join(p.cmdline()) for p in procs)
    half.commands.put(ServiceClaimResponse(stop=[a.id]))
    stopped = half.wait_report(a.id, "stopped", timeout=30)
    assert stopped.error is None
    assert labelled(a.id) == []
    workspace = w.cfg.work_dir / "jupyter" / "alice" / "proj"
    assert workspace.is_dir() and stat.S_IMODE(workspace.stat().st_mode) == 0o700
    assert not (w.cfg.work_dir / "jupyter" / ".runtime" / a.id).exists()
    assert free(port)
    wait_for(lambda: (a.id, 1) not in w.services.live_keys(), 5, "the worker to forget it")
    print(f"local start-to-running: {start_to_200:.2f}s")


def test_a_crashed_server_is_reported_with_its_kernels_gone(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    _, half = make_worker()
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    running = half.wait_report(a.id, "running")
    start_kernel(running.url, a.token)
    procs = wait_for(lambda: len(labelled(a.id)) >= 2 and labelled(a.id), 30, "the kernel process")
    server = next(
        p for p in procs if p.pid == os.getpgid(p.pid) and "jupyter_server" in " ".join(p.cmdline())
    )
    server.send_signal(signal.SIGKILL)
    error = half.wait_report(a.id, "error", timeout=30)
    assert error.error == "Jupyter exited: killed by signal 9 (SIGKILL)"
    assert any("Jupyter Server" in line for line in error.log_tail), error.log_tail
    assert all(a.token not in line for line in error.log_tail)
    wait_for(lambda: labelled(a.id) == [], 10, "the kernel to go")


def _fake_python(tmp_path: Path, script: str) -> str:
    """An interpreter that answers the worker's import check as the real one does, and runs
    `script` (sh) instead of Jupyter."""
    path = tmp_path / "python"
    path.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n{script}\n')
    path.chmod(0o755)
    return str(path)


def test_an_early_exit_is_an_error_with_the_output_redacted(
    make_worker: Callable[..., tuple[Worker, ServerHalf]], tmp_path: Path
) -> None:
    python = _fake_python(
        tmp_path, 'echo "starting with token $JUPYTER_TOKEN"; echo "bad config" >&2; exit 3'
    )
    _, half = make_worker(python=python)
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    error = half.wait_report(a.id, "error", timeout=30)
    assert error.error == "Jupyter exited before it answered: exit code 3"
    assert error.log_tail == ["starting with token ***", "bad config"]


def test_a_server_that_never_answers_is_stopped_at_the_start_timeout(
    make_worker: Callable[..., tuple[Worker, ServerHalf]], tmp_path: Path
) -> None:
    python = _fake_python(tmp_path, "exec sleep 600")
    _, half = make_worker(python=python, service_start_timeout=1.0)
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    error = half.wait_report(a.id, "error", timeout=30)
    assert error.error == "Jupyter did not answer within 1s"
    assert labelled(a.id) == []


def test_a_worker_without_jupyter_offers_no_slots_and_refuses_starts(
    make_worker: Callable[..., tuple[Worker, ServerHalf]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # -S: without site-packages, so neither jupyter_server nor ipykernel can be found.
    path = tmp_path / "bare-python"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    path.chmod(0o755)
    w, half = make_worker(python=str(path))
    assert w.services.slots == 0
    assert "install fetchml[jupyter]" in caplog.text
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    error = half.wait_report(a.id, "error", timeout=10)
    assert error.error == JUPYTER_MISSING.format(python=path)


def test_a_service_the_server_gave_up_on_is_stopped_without_a_report(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    _, half = make_worker()
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    half.wait_report(a.id, "running")
    half.gone.add(a.id)  # the next renewal gets 409
    wait_for(lambda: labelled(a.id) == [], 30, "the service to stop")
    assert [r.status for r in half.of(a.id)] == ["running"] * len(half.of(a.id))


def test_worker_shutdown_stops_services_and_says_why(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    w, half = make_worker()
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    half.wait_report(a.id, "running")
    w._report_until = time.monotonic() + 10
    w.services.begin_shutdown(2.0)
    w.executor.shutdown(2.0)
    w.services.join(20)
    stopped = half.wait_report(a.id, "stopped", timeout=1)
    assert stopped.error == "the worker stopped"
    assert labelled(a.id) == []


def test_leftover_kernels_of_a_dead_worker_are_found_by_orphan_cleanup(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    w, half = make_worker()
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    running = half.wait_report(a.id, "running")
    start_kernel(running.url, a.token)
    wait_for(lambda: len(labelled(a.id)) >= 2, 30, "the kernel process")
    # Another run of the same worker (as after a crash) cleans up what it does not own.
    successor = LocalExecutor(stop_grace=1.0)
    try:
        removed = successor.remove_orphans(w.worker_id, set(), w.server_id)
    finally:
        successor.shutdown()
    assert len(removed) >= 2
    wait_for(lambda: labelled(a.id) == [], 10, "server and kernel to go")


def test_port_pool_skips_busy_ports_and_wraps() -> None:
    first, last = port_range(3)
    pool = PortPool(first, last, "127.0.0.1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        assert pool.take() == first + 1
        assert pool.take() == first + 2
        assert pool.take() is None  # the first is in use by someone else
        pool.release(first + 1)
        assert pool.take() == first + 1


def test_port_ranges_and_redaction() -> None:
    assert parse_port_range("8900-8999") == (8900, 8999)
    assert parse_port_range("9000") == (9000, 9000)
    for bad in ("x", "9000-8000", "0-10", "1-70000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)
    assert redact("?token=abc&x=abc", "abc") == "?token=***&x=***"


def test_registering_again_stops_the_services_of_the_earlier_registration(
    make_worker: Callable[..., tuple[Worker, ServerHalf]],
) -> None:
    w, half = make_worker()
    a = assignment()
    half.commands.put(ServiceClaimResponse(start=[a]))
    half.wait_report(a.id, "running")
    assert (a.id, 1) in w.services.live_keys()  # left to the service's thread by orphan cleanup
    w.services.on_register()
    stopped = half.wait_report(a.id, "stopped", timeout=30)
    assert stopped.error == "the worker registered again"
    assert labelled(a.id) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="handing folders to another user needs root")
def test_with_run_as_the_workspace_and_runtime_folders_are_the_task_users(tmp_path: Path) -> None:
    class AsNobody(LocalExecutor):
        @property
        def task_owner(self) -> tuple[int, int] | None:
            return (65534, 65534)

    work = tmp_path / "work"
    w = Worker(
        WorkerConfig(name="ra", work_dir=work, executor="local", service_ports=port_range()),
        FetchmlClient("http://127.0.0.1:9", "unused"),
        executor=AsNobody(),
    )
    svc = _Service(assignment())
    spec = w.services._spec(svc)
    assert spec is not None and svc.runtime is not None
    ws = spec.workspace
    assert ws.name == "proj" and ws.parent.name == "alice"
    for folder, mode in ((ws, 0o700), (svc.runtime, 0o700)):
        st = folder.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, mode)
    for folder in (ws.parent, w.services.root):
        st = folder.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o711)
    assert spec.env["HOME"] == str(ws) and spec.env["JUPYTER_RUNTIME_DIR"] == str(svc.runtime)
    assert svc.a.token not in " ".join(spec.command)
    w.services.ports.release(svc.port or 0)
