"""A real server and real `fetchml worker` processes, driven through HTTP."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dockerutil import docker_client, jupyter_image
from tests.harness import REPO, ServerHandle, ServerPool, die_with_parent, wait_for

__all__ = ["docker_client", "jupyter_image"]

FAST_LEASES = {
    "FETCHML_HEARTBEAT_INTERVAL": "0.5",
    "FETCHML_HEARTBEAT_TIMEOUT": "3",
    "FETCHML_SWEEP_INTERVAL": "0.2",
    "FETCHML_RATE_LIMIT_PER_MINUTE": "100000",
    # Workers long-poll for at most this long, so a stopped worker exits within it (the default
    # 20 s, capped at 5 s by the worker, made every test's teardown wait ~5 s). Dispatch does not
    # wait on it: the server answers a waiting claim as soon as a task fits.
    "FETCHML_CLAIM_WAIT": "1",
}
# How the worker's own lines about a task's datasets start in the task's log.
DATASET_LINE = "fetchml: dataset "


@dataclass
class Cluster:
    server: ServerHandle
    tmp: Path
    admin: str
    user: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, name: str, *extra: str, key: str | None = None) -> subprocess.Popen[bytes]:
        key = key or self.server.make_key(f"wk-{name}", "worker", worker_name=name)
        log = (self.tmp / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fetchml",
                "worker",
                "--server",
                self.server.url,
                "--name",
                name,
                "--work-dir",
                str(self.tmp / f"work-{name}"),
                "--stop-grace",
                "2",
                *extra,
            ],
            cwd=REPO,
            # Never in argv: `fetchml worker` refuses --api-key (argv is world-readable).
            env={**self.server.env(), "FETCHML_API_KEY": key},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.workers.append(proc)
        self.wait_for(
            lambda: any(w["id"] == name and w["status"] == "active" for w in self.workers_info()),
            what=f"worker {name} to register",
        )
        return proc

    def worker_log(self, name: str) -> str:
        p = self.tmp / f"worker-{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def workers_info(self) -> list[dict[str, Any]]:
        # Straight from the database: registration is visible there the moment it commits.
        rows = self.server.db_exec("SELECT id, status FROM workers")
        return [{"id": r[0], "status": r[1]} for r in rows]

    def submit(self, **body: Any) -> str:
        body.setdefault("job_name", "e2e")
        with self.server.http(self.user) as http:
            r = http.post("/v1/tasks", json=body)
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        with self.server.http(self.admin) as http:
            r = http.get(f"/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            return dict(r.json())

    def logs(self, task_id: str, *, worker_lines: bool = False) -> list[str]:
        """The task's log: its own output, without the worker's `fetchml: dataset ...` progress
        lines unless `worker_lines` (tests/e2e/test_worker_dataset_log.py checks those)."""
        with self.server.http(self.admin) as http:
            lines = list(http.get(f"/v1/tasks/{task_id}/logs").json()["lines"])
        return lines if worker_lines else [line for line in lines if not line.startswith(DATASET_LINE)]

    def wait_for(self, cond: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
        return wait_for(cond, timeout, what)

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            t = self.task(task_id)
            return t if t["status"] in statuses else None

        return dict(self.wait_for(check, timeout=timeout, what=f"task {task_id} to be {'/'.join(statuses)}"))

    def stop(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(5)


@contextmanager
def running_cluster(pool: ServerPool, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A server from `pool` with short leases (FAST_LEASES, then `env`), keys for admin `root`
    and user `alice`, and the workers a test starts on it; all stopped afterwards (the
    server's database goes when the pool closes)."""
    server = pool.handle(tmp / "server", {**FAST_LEASES, **(env or {})})
    server.start()
    c = Cluster(
        server=server,
        tmp=tmp,
        admin=server.make_key("root", "admin"),
        user=server.make_key("alice", "user"),
    )
    try:
        yield c
    finally:
        c.stop()
        server.stop()


@pytest.fixture
def cluster(server_pool: ServerPool, tmp_path: Path) -> Iterator[Cluster]:
    """One server (on each backend under test) and the workers a test starts on it."""
    with running_cluster(server_pool, tmp_path) as c:
        yield c


@contextmanager
def local_cluster(pool: ServerPool, tmp: Path) -> Iterator[Cluster]:
    """A server from `pool` and one local-executor worker (admin `root`, user `alice`): the
    module-wide setup of the CLI and TUI tests that watch real tasks run."""
    with running_cluster(pool, tmp) as c:
        c.start_worker("w1", "--executor", "local")
        yield c


def gated(gate: Path, script: str) -> str:
    """A command that waits (at most 60 s) for `gate` to exist, then runs `script`: the test
    decides when a task goes on."""
    wait = f"for i in $(seq 1200); do [ -e {shlex.quote(str(gate))} ] && break; sleep 0.05; done"
    return "sh -c " + shlex.quote(f"{wait}; {script}")
