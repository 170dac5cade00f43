"""API8 (security misconfiguration), Docker executor: task containers ran with Docker's default
capabilities, no no-new-privileges, no pids limit, no memory/CPU limit unless the task asked, and
always on the default network. Each test starts real containers from the busybox test image."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml.runner.executors.base import ExitStatus
from fetchml.runner.executors.docker import (
    DEFAULT_PIDS_LIMIT,
    TASK_CAPABILITIES,
    DockerExecutor,
    host_share,
)
from tests.backends import SQLITE
from tests.dockerutil import TEST_IMAGE, docker_client
from tests.e2e.conftest import Cluster, cluster
from tests.runner.exec_kit import docker_spec_for as spec_for
from tests.runner.exec_kit import finish

__all__ = ["cluster", "docker_client"]

pytestmark = pytest.mark.docker

# Linux capability numbers (include/uapi/linux/capability.h) of those a task may keep.
CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "SETGID": 6, "SETUID": 7}


def run(executor: DockerExecutor, tmp_path: Path, worker_id: str, script: str, **kw: Any) -> list[str]:
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", script], worker_id, **kw))
    try:
        lines, status = finish(execution)
    finally:
        execution.cleanup()
    assert status == ExitStatus(exit_code=0), lines
    return lines


@pytest.fixture
def worker_id(docker_client: Any) -> Iterator[str]:
    wid = "w-sec-" + uuid.uuid4().hex[:10]
    yield wid
    for c in docker_client.containers.list(all=True, filters={"label": f"fetchml.worker={wid}"}):
        c.remove(force=True)


@pytest.fixture
def executor(docker_client: Any) -> DockerExecutor:
    return DockerExecutor(client=docker_client, stop_grace=1)


def test_a_container_is_created_hardened(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    execution = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker_id))
    try:
        attrs = docker_client.containers.get(execution.id).attrs
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == sorted(TASK_CAPABILITIES) == sorted(CAP_NUMBERS)
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] == DEFAULT_PIDS_LIMIT == 4096
        assert host["Privileged"] is False
        assert host["IpcMode"] == "private"
        assert host["NetworkMode"] == "bridge"
        # No limit asked for: this host's share (one slot), never unlimited.
        memory, cpus = host_share(1)
        assert host["Memory"] == host["MemorySwap"] == int(memory * 1024**3) > 0
        assert host["NanoCpus"] == int(cpus * 1e9) > 0
        # Only the workspace is mounted: no Docker socket, nothing else of the host.
        assert [m["Destination"] for m in attrs["Mounts"]] == ["/workspace"]
        assert not any("docker.sock" in str(m) for m in attrs["Mounts"])
    finally:
        execution.stop(1)
        execution.cleanup()


def test_default_limits_come_from_the_worker_and_a_task_request_wins(
    tmp_path: Path, docker_client: Any, worker_id: str
) -> None:
    executor = DockerExecutor(client=docker_client, default_memory_gb=0.5, default_cpus=0.5, pids_limit=100)
    for kw, memory, nano_cpus in [
        ({}, 512 * 1024**2, 500_000_000),
        ({"memory_gb": 1, "cpu": 1}, 1024**3, 1_000_000_000),  # the task's own request
    ]:
        execution = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker_id, **kw))
        try:
            host = docker_client.containers.get(execution.id).attrs["HostConfig"]
            assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (memory, memory, nano_cpus), kw
            assert host["PidsLimit"] == 100
        finally:
            execution.stop(1)
            execution.cleanup()


def test_default_limits_are_a_share_per_slot_and_0_means_none(tmp_path: Path) -> None:
    ex = DockerExecutor(client=object())
    one, two = host_share(1), host_share(2)
    assert two[0] == pytest.approx(one[0] / 2, abs=1 / 512) and two[1] == pytest.approx(one[1] / 2, abs=0.01)
    ex.set_slots(2)
    config = ex.container_config(spec_for(tmp_path, ["true"], "w"), TEST_IMAGE)
    assert config["mem_limit"] == str(int(two[0] * 1024**3)) or config["mem_limit"] == f"{int(two[0])}g"
    assert config["nano_cpus"] == int(two[1] * 1e9)
    unlimited = DockerExecutor(client=object(), default_memory_gb=0, default_cpus=0, pids_limit=0)
    config = unlimited.container_config(spec_for(tmp_path, ["true"], "w"), TEST_IMAGE)
    assert "mem_limit" not in config and "nano_cpus" not in config and "pids_limit" not in config


def test_a_task_holds_only_the_documented_capabilities_and_no_new_privileges(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    lines = run(executor, tmp_path, worker_id, "grep -e '^Cap' -e '^NoNewPrivs' /proc/self/status")
    status = dict(line.split(":\t") for line in lines)
    assert status["NoNewPrivs"] == "1"
    expected = sum(1 << n for n in CAP_NUMBERS.values())
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == expected, (field, status[field])
    assert int(status["CapAmb"], 16) == 0


def test_dropped_capabilities_are_refused_and_kept_ones_work(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    # The workspace belongs to someone else than the container's root, as when the worker is
    # not root: writing there needs DAC_OVERRIDE, which is kept (tasks must write outputs).
    workspace = tmp_path / "ws"
    (workspace / "snapshot").mkdir(parents=True)
    for p in (workspace, workspace / "snapshot"):
        os.chown(p, 4321, 4321)
        p.chmod(0o755)
    script = (
        "busybox mknod /tmp/mem c 1 1 && echo mknod-ok;"  # MKNOD dropped
        "busybox chroot / true && echo chroot-ok;"  # SYS_CHROOT dropped
        "busybox ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok;"  # NET_RAW dropped
        "echo out > /workspace/snapshot/written && echo write-ok;"  # DAC_OVERRIDE kept
        "busybox chown 1234:1234 /workspace/snapshot/written && echo chown-ok;"  # CHOWN kept
        "true"
    )
    lines = run(executor, tmp_path, worker_id, script)
    assert [line for line in lines if line.endswith("-ok")] == ["write-ok", "chown-ok"], lines
    assert any("mknod" in line and "Operation not permitted" in line for line in lines), lines
    assert any("chroot" in line and "Operation not permitted" in line for line in lines), lines
    assert (workspace / "snapshot" / "written").stat().st_uid == 1234


@pytest.mark.parametrize(("network", "interfaces"), [("none", ["lo"]), ("bridge", ["eth0", "lo"])])
def test_network_mode_is_the_workers(
    tmp_path: Path, docker_client: Any, worker_id: str, network: str, interfaces: list[str]
) -> None:
    executor = DockerExecutor(client=docker_client, network=network)
    lines = run(executor, tmp_path, worker_id, "cat /proc/net/dev")
    names = sorted(line.split(":")[0].strip() for line in lines[2:])
    assert names == interfaces


def test_a_fork_bomb_stays_within_the_pids_limit(tmp_path: Path, docker_client: Any, worker_id: str) -> None:
    limit = 64
    executor = DockerExecutor(client=docker_client, pids_limit=limit, default_cpus=0.5, stop_grace=1)
    # A filler forks long-lived processes until the kernel refuses a fork; the shell that was refused
    # exits, so the count settles one below the limit and stays there (a classic bomb, whose branches
    # die at the limit, decays between looks). The task's own shell only waits, so it never forks at
    # the limit and the container lives on.
    bomb = "sleep 1000 & (while :; do sleep 1000 & done) & wait"
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", bomb], worker_id))
    container = docker_client.containers.get(execution.id)
    seen: list[int] = []
    try:
        # At most 8 looks (each stats call takes about 2 s) until the filler has been refused.
        for _ in range(8):
            pids = container.stats(stream=False).get("pids_stats", {})
            assert pids.get("limit") == limit
            seen.append(int(pids.get("current", 0)))
            assert len(container.top()["Processes"]) <= limit
            if b"can't fork" in container.logs():
                break
        assert b"can't fork" in container.logs(), seen  # the kernel refused a fork...
        pids = container.stats(stream=False).get("pids_stats", {})
        seen.append(int(pids.get("current", 0)))
        assert limit - 2 <= seen[-1] <= limit, seen  # ...with the container full, never past it
        assert max(seen) <= limit, seen
    finally:
        execution.stop(1)
        status = execution.wait(30)
        execution.cleanup()
    assert status is not None and status.cancelled


# -- the worker's options, end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> str:
    """Container settings do not depend on the database: SQLite only."""
    return SQLITE


def test_worker_options_reach_the_containers(cluster: Cluster, docker_client: Any) -> None:
    cluster.start_worker(
        "dw-opts",
        "--executor", "docker", "--default-image", TEST_IMAGE, "--network", "none",
        "--pids-limit", "100", "--default-memory-gb", "0.5", "--default-cpus", "0.5",
    )  # fmt: skip
    tid = cluster.submit(entrypoint="sh -c 'cat /proc/net/dev; echo started; sleep 1000'")
    cluster.wait_for(lambda: "started" in cluster.logs(tid), timeout=60, what="the container to start")
    [container] = docker_client.containers.list(filters={"label": f"fetchml.task={tid}"})
    host = container.attrs["HostConfig"]
    assert (host["NetworkMode"], host["PidsLimit"], host["Memory"], host["NanoCpus"]) == (
        "none",
        100,
        512 * 1024**2,
        500_000_000,
    )
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    interfaces = [line.split(":")[0].strip() for line in cluster.logs(tid)[2:] if ":" in line]
    assert interfaces == ["lo"]
    with cluster.server.http(cluster.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    cluster.wait_status(tid, "failed", timeout=30)


def test_an_invalid_network_name_stops_the_worker_with_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fetchml", "worker", "--server", "http://127.0.0.1:9",
         "--executor", "docker", "--network", "bad name;rm", "--work-dir", str(tmp_path / "w")],
        env={**os.environ, "FETCHML_API_KEY": "fml_x"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "invalid Docker network" in proc.stderr
