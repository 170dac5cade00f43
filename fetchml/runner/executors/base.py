"""The executor interface: how a worker starts, watches and stops one attempt of a task.

Both executors (docker, local) implement it; the worker loop knows nothing else about them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ExecSpec:
    task_id: str
    attempt: int
    worker_id: str
    command: list[str]  # argv, already resolved from entrypoint + args (see runner.entrypoint)
    workspace: Path  # the attempt's workspace on the host; the snapshot is unpacked in workspace/"snapshot"
    workdir: Path  # where the command starts (host path; docker maps it into the container)
    env: dict[str, str] = field(default_factory=dict)
    image: str | None = None  # docker only
    cpu: int | None = None  # cores; docker: CPU quota
    # docker: memory limit (and swap limit, so no swap), in GiB. A float so a test can ask for
    # 64 MiB (0.0625); tasks ask in whole GB on the wire.
    memory_gb: float | None = None
    gpus: tuple[int, ...] = ()  # specific GPU indices assigned to this attempt
    # Files the task may read but never change (verified dataset cache entries): (host file,
    # path relative to `workdir`). Docker bind-mounts each read-only over that path; the local
    # executor ignores this (the workspace already holds a private or read-only copy there).
    readonly_mounts: tuple[tuple[Path, str], ...] = ()
    # The id of the server (installation) the attempt belongs to, stamped on the container or
    # process next to the worker name: orphan cleanup touches only what carries both.
    server_id: str | None = None
    # Docker only: (host port, container port) pairs published on `bind_host` (a Jupyter
    # service's server). The local executor ignores both: its process binds the host port itself.
    ports: tuple[tuple[int, int], ...] = ()
    bind_host: str = "127.0.0.1"


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int | None  # None when the process never started or its code is unknown
    error: str | None = None  # why it failed, in words a user understands; None on exit 0
    oom_killed: bool = False
    cancelled: bool = False
    # The executor lost its runtime mid-run (the Docker daemon restarted and stopped the
    # container): not the task's fault, so the worker reports the attempt interrupted.
    runtime_lost: bool = False


class Execution(Protocol):
    """A started attempt."""

    def lines(self) -> Iterator[str]:
        """stdout and stderr, merged, line by line, in order, without trailing newlines.
        Ends when the process has exited and every line has been read."""
        ...

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status, or None if still running after `timeout` seconds."""
        ...

    def stop(self, grace: float = 10.0) -> None:
        """Ask it to stop (SIGTERM / docker stop); kill it (whole process group / container)
        if it is still running after `grace` seconds. Idempotent. wait() then reports
        cancelled=True."""
        ...

    def cleanup(self) -> None:
        """Release what it holds (remove the container). Called after collection."""
        ...


class Executor(Protocol):
    name: str

    def start(self, spec: ExecSpec) -> Execution:
        """Start the attempt. Raises ExecutorError with a clear message when it cannot start
        (missing image that cannot be pulled, no such command, ...)."""
        ...

    def remove_orphans(
        self, worker_id: str, live: set[tuple[str, int]], server_id: str | None = None
    ) -> list[str]:
        """Remove leftovers labelled for this worker of this server (both labels must match; a
        `server_id` of None matches only leftovers without a server label) whose
        (task_id, attempt) is not in `live`. Returns what was removed (container ids or pids).
        Called when a worker registers."""
        ...

    def shutdown(self, grace: float | None = None) -> None:
        """Stop every execution this executor started that is still running (as `stop`, all
        at once, so it takes about `grace` seconds, not one grace per task). For the worker's
        own shutdown; None means the executor's default grace."""
        ...


class ExecutorError(Exception):
    """An attempt could not be started; the message is shown to the user as the task's error."""


class _Stoppable(Protocol):
    @property
    def running(self) -> bool: ...

    def stop(self, grace: float = 10.0) -> None: ...


def stop_in_parallel(executions: Sequence[_Stoppable], grace: float) -> None:
    """Stop every running one at once, each with the same grace, and return when all have: a
    worker's shutdown takes about one grace, not one per attempt."""
    threads = [threading.Thread(target=e.stop, args=(grace,), daemon=True) for e in executions if e.running]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
