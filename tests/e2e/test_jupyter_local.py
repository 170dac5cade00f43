"""Jupyter services end to end: a real server, real `fetchml worker --executor local` processes,
real Jupyter servers and kernels."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Cluster
from tests.jupyter_kit import kernel_round_trip
from tests.runner.servicekit import labelled, port_range

pytestmark = pytest.mark.slow


def start(cluster: Cluster, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "nb")
    with cluster.server.http(cluster.user) as http:
        r = http.post("/v1/jupyter/services", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def service(cluster: Cluster, sid: str) -> dict[str, Any]:
    with cluster.server.http(cluster.user) as http:
        r = http.get(f"/v1/jupyter/services/{sid}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def wait_service(cluster: Cluster, sid: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = service(cluster, sid)
        return s if s["status"] in statuses else None

    return dict(cluster.wait_for(check, timeout=timeout, what=f"service {sid} to be {'/'.join(statuses)}"))


def delete(cluster: Cluster, sid: str) -> None:
    with cluster.server.http(cluster.user) as http:
        assert http.delete(f"/v1/jupyter/services/{sid}").status_code == 204


def start_kernel(s: dict[str, Any]) -> None:
    r = httpx.post(
        f"{s['url']}api/kernels",
        json={"name": "python3"},
        headers={"Authorization": f"token {s['token']}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def local_worker(cluster: Cluster, name: str, *extra: str) -> Any:
    first, last = port_range()
    return cluster.start_worker(name, "--executor", "local", "--service-ports", f"{first}-{last}", *extra)


def test_a_service_starts_answers_and_stops_leaving_no_process(cluster: Cluster) -> None:
    local_worker(cluster, "j1")
    s = start(cluster, name="lab")
    sid = s["id"]
    got = wait_service(cluster, sid, "running", "error")
    assert got["status"] == "running", got
    assert got["worker_id"] == "j1" and got["url"].startswith("http://127.0.0.1:")
    assert got["url"].endswith(s["proxy_path"]) and got["started_at"]
    assert (
        httpx.get(f"{got['url']}api/status", headers={"Authorization": f"token {s['token']}"}).status_code
        == 200
    )
    assert httpx.get(f"{got['url']}api/status").status_code == 403
    # The same server through the fetchml server's proxy, with the user's key and no token: its
    # status, and a kernel round trip over the proxied WebSocket.
    proxy = cluster.server.url + s["proxy_path"]
    assert httpx.get(f"{proxy}api/status", headers={"X-API-Key": cluster.user}).status_code == 200
    kernel_round_trip(proxy, {"X-API-Key": cluster.user})
    start_kernel(got)
    cluster.wait_for(lambda: len(labelled(sid)) >= 2, what="the kernel process")
    delete(cluster, sid)
    done = wait_service(cluster, sid, "stopped", "error", timeout=30)
    assert done["status"] == "stopped" and done["stop_reason"] == "stop", done
    assert labelled(sid) == []  # neither the server nor its kernel
    assert (cluster.tmp / "work-j1" / "jupyter" / "alice" / "lab").is_dir()
    assert s["token"] not in cluster.worker_log("j1")


def test_a_killed_worker_leaves_its_service_in_error_and_no_process(cluster: Cluster) -> None:
    w = local_worker(cluster, "j1")
    sid = start(cluster)["id"]
    running = wait_service(cluster, sid, "running", "error")
    assert running["status"] == "running", running
    start_kernel(running)
    cluster.wait_for(lambda: len(labelled(sid)) >= 2, what="the kernel process")
    w.send_signal(signal.SIGKILL)
    w.wait(10)
    got = wait_service(cluster, sid, "error", timeout=30)  # the heartbeat timeout is 3 s
    assert got["stop_reason"] == "worker_lost", got
    # The watchdog kills the server's group; the kernel sees its parent gone and exits.
    cluster.wait_for(lambda: labelled(sid) == [], timeout=20, what="the service's processes to go")


def test_a_service_waits_for_a_slot_and_starts_when_one_frees(cluster: Cluster) -> None:
    local_worker(cluster, "j1", "--service-slots", "1")
    first = start(cluster, name="one")["id"]
    assert wait_service(cluster, first, "running", "error")["status"] == "running"
    second = start(cluster, name="two")["id"]
    waiting = service(cluster, second)
    assert waiting["status"] == "starting" and "slot" in waiting["pending_reason"], waiting
    delete(cluster, first)
    got = wait_service(cluster, second, "running", "error")
    assert got["status"] == "running" and got["worker_id"] == "j1", got
    assert service(cluster, first)["status"] == "stopped"


def test_a_worker_stopped_with_sigterm_stops_its_service_and_says_why(cluster: Cluster) -> None:
    w = local_worker(cluster, "j1")
    sid = start(cluster)["id"]
    assert wait_service(cluster, sid, "running", "error")["status"] == "running"
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    got = service(cluster, sid)
    assert got["status"] == "stopped" and got["stop_reason"] == "worker_stopped", got
    assert got["error"] == "the worker stopped"
    assert labelled(sid) == []
