"""`dockerd` restarted while a task runs in it.

Documented behaviour (docs/faults.md): without live-restore, a stopping daemon stops every
container, which says nothing about the task. The worker notices the broken connection, waits
for the daemon to come back, and reports the attempt *interrupted*: it is requeued at once
without spending a retry and runs again (here on the same worker, once the daemon answers).

SQLite only: restarting the daemon is slow (its containers get their stop timeout) and the
behaviour is the worker's, not the database's.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.backends import SQLITE
from tests.dockerutil import TEST_IMAGE
from tests.e2e.conftest import FAST_LEASES, Cluster
from tests.harness import ServerPool

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.dockerd_restart]

# Long on attempt 1 only; busybox sh as PID 1 ignores SIGTERM, so the daemon kills it.
TASK = "sh -c 'echo go; if [ \"$FETCHML_ATTEMPT\" = 1 ]; then sleep 120; fi; echo done'"


def _dockerd() -> psutil.Process:
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "dockerd":
            return p
    raise AssertionError("no dockerd process on this machine")


def _docker_answers() -> bool:
    docker = shutil.which("docker") or "docker"
    return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0


def restart_dockerd() -> None:
    """Stop the daemon the way an operator's `systemctl restart docker` does (SIGTERM, it stops
    its containers and exits) and start it again with the same command line, detached as
    .ci/docker.sh starts it."""
    proc = _dockerd()
    cmdline = proc.cmdline()
    proc.terminate()
    proc.wait(60)
    with open("/tmp/dockerd.log", "ab") as log:
        subprocess.Popen(cmdline, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _docker_answers():
        assert time.monotonic() < deadline, "dockerd did not come back within 60 s"
        time.sleep(0.5)


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Iterator[Cluster]:
    pool = ServerPool(SQLITE)
    server = pool.handle(tmp_path / "server", dict(FAST_LEASES)).start()
    c = Cluster(
        server=server, tmp=tmp_path, admin=server.make_key("root", "admin"), user=server.make_key("alice", "user")
    )
    try:
        yield c
    finally:
        c.stop()
        pool.close()
        if not _docker_answers():  # never leave the machine without its daemon
            restart_dockerd()


def test_a_dockerd_restart_mid_task_requeues_it_without_spending_a_retry(
    sqlite_cluster: Cluster, docker_client: Any
) -> None:
    c = sqlite_cluster
    worker = c.start_worker("dk", "--executor", "docker", "--default-image", TEST_IMAGE)
    tid = c.submit(entrypoint=TASK, max_retries=0)
    c.wait_for(lambda: "go" in c.logs(tid), timeout=60, what="attempt 1 to run in a container")

    restart_dockerd()

    t = c.wait_status(tid, "completed", "failed", timeout=120)
    # max_retries=0: a retry spent would have failed it for good.
    assert (t["status"], t["attempt"], t["retry_count"]) == ("completed", 2, 0), t
    assert worker.poll() is None, "the worker must survive the daemon's restart"
    assert "lost the Docker daemon" in c.worker_log("dk")
    assert c.logs(tid).count("done") == 1
    rows = c.server.db_exec(
        "SELECT metadata FROM audit_events WHERE resource = ? AND metadata LIKE '%interrupted%'",
        (f"task:{tid}",),
    )
    assert rows, "the requeue is audited as an interruption"
