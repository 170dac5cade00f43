"""Jupyter services through the docker executor: a real Jupyter server in the locally built
image (tests/dockerutil.py JUPYTER_IMAGE), its port published on the worker's bind address."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fetchml.core.jupyter import ServiceClaimResponse
from fetchml.runner.executors.base import ExecSpec, ExecutorError
from fetchml.runner.executors.docker import DockerExecutor
from fetchml.runner.worker import Worker
from tests.runner.servicekit import ServerHalf, assignment, free, worker_factory

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def containers(client: Any, sid: str) -> list[Any]:
    return list(
        client.containers.list(all=True, filters={"label": f"fetchml.task={sid}"}, ignore_removed=True)
    )


@pytest.fixture
def make_worker(tmp_path: Path, jupyter_image: str) -> Iterator[Callable[..., tuple[Worker, ServerHalf]]]:
    with worker_factory(tmp_path, executor="docker", default_memory_gb=0, default_cpus=0) as make:
        yield make


def test_a_service_in_a_container_answers_on_its_published_port_and_goes_away(
    make_worker: Callable[..., tuple[Worker, ServerHalf]], jupyter_image: str, docker_client: Any
) -> None:
    w, half = make_worker()
    a = assignment(image=jupyter_image)
    half.commands.put(ServiceClaimResponse(start=[a]))
    running = half.wait_report(a.id, "running", timeout=90)
    assert running.url and running.url.startswith("http://127.0.0.1:")
    port = int(running.url.split(":")[2].split("/")[0])
    (c,) = containers(docker_client, a.id)
    assert c.attrs["HostConfig"]["PortBindings"] == {
        "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert f"JUPYTER_TOKEN={a.token}" in c.attrs["Config"]["Env"]
    assert a.token not in " ".join(c.attrs["Config"]["Cmd"])
    headers = {"Authorization": f"token {a.token}"}
    assert httpx.get(f"{running.url}api/status", headers=headers).status_code == 200
    assert httpx.get(f"{running.url}api/status").status_code == 403
    r = httpx.post(f"{running.url}api/kernels", json={"name": "python3"}, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    # The workspace is the user's folder on the worker, mounted at /workspace.
    r = httpx.put(
        f"{running.url}api/contents/hello.txt",
        json={"type": "file", "format": "text", "content": "hi"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    assert (w.cfg.work_dir / "jupyter" / "alice" / "proj" / "hello.txt").read_text() == "hi"
    half.commands.put(ServiceClaimResponse(stop=[a.id]))
    stopped = half.wait_report(a.id, "stopped", timeout=60)
    assert stopped.error is None
    assert containers(docker_client, a.id) == []
    assert free(port)


def test_a_worker_without_a_network_reports_why(
    make_worker: Callable[..., tuple[Worker, ServerHalf]], jupyter_image: str, docker_client: Any
) -> None:
    _, half = make_worker(network="none")
    a = assignment(image=jupyter_image)
    half.commands.put(ServiceClaimResponse(start=[a]))
    error = half.wait_report(a.id, "error", timeout=30)
    assert error.error and "--network none" in error.error
    assert containers(docker_client, a.id) == []


def test_published_ports_in_the_container_config(tmp_path: Path, docker_client: Any) -> None:
    spec = ExecSpec(
        task_id=uuid.uuid4().hex,
        attempt=1,
        worker_id="w",
        command=["true"],
        workspace=tmp_path,
        workdir=tmp_path,
        ports=((8901, 8888),),
        bind_host="10.1.2.3",
    )
    bridge = DockerExecutor(client=docker_client, default_memory_gb=0, default_cpus=0)
    assert bridge.container_config(spec, "img")["ports"] == {"8888/tcp": ("10.1.2.3", 8901)}
    host = DockerExecutor(client=docker_client, network="host", default_memory_gb=0, default_cpus=0)
    with pytest.raises(ExecutorError, match="must equal"):
        host.container_config(spec, "img")
    same = ExecSpec(**{**spec.__dict__, "ports": ((8901, 8901),)})
    assert "ports" not in host.container_config(same, "img")
    assert "ports" not in bridge.container_config(ExecSpec(**{**spec.__dict__, "ports": ()}), "img")
