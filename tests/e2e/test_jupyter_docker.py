"""Jupyter services end to end in containers: a real server, a real `fetchml worker --executor
docker`, a real Jupyter server in the locally built image (tests/dockerutil.py JUPYTER_IMAGE)."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.test_jupyter_local import delete, start, start_kernel, wait_service
from tests.runner.servicekit import port_range

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def containers(client: Any, sid: str) -> list[Any]:
    return list(
        client.containers.list(all=True, filters={"label": f"fetchml.task={sid}"}, ignore_removed=True)
    )


def docker_worker(cluster: Cluster, name: str) -> Any:
    first, last = port_range()
    return cluster.start_worker(
        name, "--executor", "docker", "--default-memory-gb", "0", "--service-ports", f"{first}-{last}"
    )


def test_a_service_in_a_container_answers_and_leaves_no_container(
    cluster: Cluster, docker_client: Any, jupyter_image: str
) -> None:
    docker_worker(cluster, "dj")
    s = start(cluster, name="lab", image=jupyter_image)
    got = wait_service(cluster, s["id"], "running", "error", timeout=90)
    assert got["status"] == "running", got
    headers = {"Authorization": f"token {s['token']}"}
    assert httpx.get(f"{got['url']}api/status", headers=headers).status_code == 200
    assert httpx.get(f"{got['url']}api/status").status_code == 403
    start_kernel(got)
    (c,) = containers(docker_client, s["id"])
    assert c.status == "running"
    delete(cluster, s["id"])
    done = wait_service(cluster, s["id"], "stopped", "error", timeout=60)
    assert done["status"] == "stopped", done
    assert containers(docker_client, s["id"]) == []
    assert s["token"] not in cluster.worker_log("dj")


def test_a_killed_worker_leaves_no_container(
    cluster: Cluster, docker_client: Any, jupyter_image: str
) -> None:
    w = docker_worker(cluster, "dj")
    sid = start(cluster, image=jupyter_image)["id"]
    assert wait_service(cluster, sid, "running", "error", timeout=90)["status"] == "running"
    w.send_signal(signal.SIGKILL)
    w.wait(10)
    got = wait_service(cluster, sid, "error", timeout=30)
    assert got["stop_reason"] == "worker_lost", got
    cluster.wait_for(
        lambda: containers(docker_client, sid) == [], timeout=30, what="the watchdog to remove it"
    )
