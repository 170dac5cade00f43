"""Fault injection against real processes: a real server (both backends) and real `fetchml worker`
processes, killed, stopped and cut off for real. See tests/e2e/conftest.py for the Cluster."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.dockerutil import docker_client
from tests.e2e.conftest import Cluster, running_cluster
from tests.harness import REPO, ServerPool, die_with_parent

__all__ = ["Cluster", "docker_client", "procs_of", "spawn_worker", "watchdog_of"]


def procs_of(task_id: str) -> list[psutil.Process]:
    """Live processes of a task's attempts (its environment names the task)."""
    found = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get("FETCHML_TASK_ID") == task_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def watchdog_of(worker: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The task watchdog(s) a worker started (see fetchml/runner/watchdog.py)."""
    try:
        kids = psutil.Process(worker.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if any("watchdog.py" in part for part in k.cmdline())]


def spawn_worker(
    url: str, env: dict[str, str], key: str, name: str, work_dir: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """A `fetchml worker` process, not waited for (it may be meant to wait for its server)."""
    out = log.open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fetchml",
            "worker",
            "--server",
            url,
            "--name",
            name,
            "--work-dir",
            str(work_dir),
            "--executor",
            "local",
            *extra,
        ],
        cwd=REPO,
        env={**env, "FETCHML_API_KEY": key},
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )


@pytest.fixture
def fault_cluster(server_pool: ServerPool, tmp_path: Path) -> Iterator[Cluster]:
    """One server with short leases (heartbeat timeout 3 s) on each backend under test."""
    with running_cluster(server_pool, tmp_path) as c:
        yield c
