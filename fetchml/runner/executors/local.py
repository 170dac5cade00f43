"""The local executor: an attempt is a process group on this machine.

Each attempt runs in its own session (setsid), so the whole tree it spawns shares one process
group that can be signalled at once. What it guarantees:

- When the main process exits, whatever it left running in its group is killed (as Docker does
  when a container's PID 1 exits), so `lines()` ends and nothing outlives the attempt.
- `stop(grace)` sends SIGTERM to the group (and to descendants that left it with setsid), waits
  up to `grace` seconds for them all to exit, then SIGKILLs what is left.
- `LocalExecutor.shutdown()` stops every attempt it started, all at once (worker shutdown).
- If the worker itself dies without a shutdown (SIGKILL, OOM kill of the worker process), its
  attempts would live on, since setsid detaches them. Two things stop them:
  - a watchdog (fetchml/runner/watchdog.py): a small process of the worker's user (root with
    `run_as`, so it may signal the task's user) in a session of its own, holding the read end
    of a pipe whose write end only the worker holds. The executor tells it each attempt's
    process group; when the pipe closes (the worker is gone, however it died) it SIGKILLs them
    all and exits. It ignores SIGTERM/SIGINT/SIGHUP, so it never outlives the worker either.
  - every attempt carries FETCHML_LABEL_WORKER / _SERVER / _TASK / _ATTEMPT in its environment
    (inherited by its children, like Docker labels), and `remove_orphans()`, called when a
    worker registers, kills the process groups labelled for that worker name AND that server
    whose (task, attempt) it no longer owns (a watchdog killed along with the worker).

Not covered: a descendant that both leaves the group (setsid) and is orphaned before a stop; a
process that clears its own environment escapes `remove_orphans`. Use the docker executor for
isolation that does not rely on cooperation.

What a task sees of the worker (see docs/operations.md, "Executors and what they isolate"):

- An allow-listed environment, never the worker's: PATH (the worker's interpreter's folder and
  the system folders), HOME (the user's; the attempt's workspace with `run_as`), LANG, LC_ALL,
  TZ and the worker's CUDA_* when set, the names the operator lists with `pass_env`, then the
  spec's own variables and the labels above.
- With `run_as` (the worker must be root): the task runs as that unprivileged user, with no
  supplementary groups and umask 077. It then cannot signal the worker, read the worker's
  /proc entries (environ, memory, fds) or its files. When the main process exits, the output
  folder is taken back (owned by the worker's user again, see `_reclaim_outputs`) before wait()
  returns, so collecting artifacts as root cannot be turned into reading someone else's file.
- Without `run_as`, the task runs as the worker's own user: it can signal the worker and read
  whatever that user can. That is for a single user on their own machine only.

The parts, one module each: process groups (local_groups), what a task gets of the worker
(local_sandbox), a started attempt (local_execution) and orphans (local_orphans). This module
holds `LocalExecutor`, which starts the processes.
"""

from __future__ import annotations

import logging
import pwd
import shlex
import subprocess
import threading

from fetchml.runner.executors.base import ExecSpec, ExecutorError, stop_in_parallel
from fetchml.runner.executors.local_execution import LocalExecution
from fetchml.runner.executors.local_groups import signal_name
from fetchml.runner.executors.local_orphans import LocalOrphanMixin
from fetchml.runner.executors.local_sandbox import (
    _TASK_UMASK,
    DEFAULT_PATH,
    LABEL_ATTEMPT,
    LABEL_SERVER,
    LABEL_TASK,
    LABEL_WORKER,
    EnvironmentMixin,
    task_user,
)
from fetchml.runner.watchdog import Watchdog

__all__ = [
    "DEFAULT_PATH",
    "LABEL_ATTEMPT",
    "LABEL_SERVER",
    "LABEL_TASK",
    "LABEL_WORKER",
    "LocalExecution",
    "LocalExecutor",
    "signal_name",
    "task_user",
]

log = logging.getLogger(__name__)


class LocalExecutor(EnvironmentMixin, LocalOrphanMixin):
    """Runs attempts as local processes. See the module docstring for what it guarantees."""

    name = "local"

    def __init__(
        self, stop_grace: float = 10.0, *, run_as: str | None = None, pass_env: tuple[str, ...] = ()
    ) -> None:
        self.stop_grace = stop_grace
        self.pass_env = tuple(pass_env)
        self.run_as = run_as
        self._user: pwd.struct_passwd | None = task_user(run_as) if run_as is not None else None
        self._lock = threading.Lock()
        self._executions: list[LocalExecution] = []
        self._watchdog = Watchdog()

    @property
    def task_owner(self) -> tuple[int, int] | None:
        """(uid, gid) tasks run as, or None when they run as the worker's own user."""
        return (self._user.pw_uid, self._user.pw_gid) if self._user is not None else None

    def start(self, spec: ExecSpec) -> LocalExecution:
        if not spec.command:
            raise ExecutorError("cannot start the task: its command is empty")
        shown = shlex.join(spec.command)
        as_user: dict[str, object] = {}
        if self._user is not None:
            # extra_groups=[]: none of root's supplementary groups (docker, disk, ...) carry over.
            as_user = {
                "user": self._user.pw_uid,
                "group": self._user.pw_gid,
                "extra_groups": [],
                "umask": _TASK_UMASK,
            }
        try:
            proc = subprocess.Popen(  # type: ignore[call-overload]
                spec.command,
                cwd=spec.workdir,
                env=self.environment(spec),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **as_user,
            )
        except OSError as exc:  # FileNotFoundError, PermissionError, NotADirectoryError, ...
            reason = exc.strerror or str(exc)
            where = f": {exc.filename}" if exc.filename else ""
            raise ExecutorError(f"cannot start {shown}: {reason}{where}") from exc
        self._watchdog.watch(proc.pid)  # start_new_session: its pid is its group id
        execution = LocalExecution(
            spec, proc, task_uid=self._user.pw_uid if self._user else None, watchdog=self._watchdog
        )
        with self._lock:
            self._executions = [e for e in self._executions if e.running]
            self._executions.append(execution)
        log.info("started %s (pid %d) for task %s attempt %d", shown, proc.pid, spec.task_id, spec.attempt)
        return execution

    def shutdown(self, grace: float | None = None) -> None:
        """Stop every attempt still running, in parallel: returns after about `grace` seconds
        at most, with none of their processes left."""
        grace = self.stop_grace if grace is None else grace
        with self._lock:
            started, self._executions = list(self._executions), []
        stop_in_parallel(started, grace)
        self._watchdog.close_if_idle()
