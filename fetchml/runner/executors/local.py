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
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil

from fetchml.runner.executors.base import ExecSpec, ExecutorError, ExitStatus, stop_in_parallel
from fetchml.runner.lines import READ_SIZE, iter_lines
from fetchml.runner.watchdog import Watchdog

__all__ = ["LABEL_ATTEMPT", "LABEL_SERVER", "LABEL_TASK", "LABEL_WORKER", "LocalExecution", "LocalExecutor"]

log = logging.getLogger(__name__)

# Environment variables that mark a process as belonging to an attempt (see remove_orphans).
LABEL_WORKER = "FETCHML_LABEL_WORKER"
LABEL_TASK = "FETCHML_LABEL_TASK"
LABEL_ATTEMPT = "FETCHML_LABEL_ATTEMPT"
LABEL_SERVER = "FETCHML_LABEL_SERVER"

# A task's PATH when the operator does not pass the worker's own (--pass-env PATH).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Taken from the worker's environment when set: locale and time zone only, nothing that may
# carry a secret. Anything else must be named by the operator (pass_env).
_PASSED_BY_DEFAULT = ("LANG", "LC_ALL", "TZ")
# Never handed to a task, even when an operator names them.
_SECRET_ENV = ("FETCHML_API_KEY", "FETCHML_API_KEY_FD")
# What a task run as another user may create (files 0600, folders 0700).
_TASK_UMASK = 0o077

_POLL = 0.05


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _group_alive(pgid: int) -> bool:
    """Whether any process other than a zombie is still in process group `pgid`.

    Zombies are dead (they only wait to be reaped by their parent, which for orphans is init;
    an init that does not reap, as in some sandboxes, would otherwise keep them "alive" forever).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal; count it as alive
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class LocalExecution:
    """One attempt started by LocalExecutor. Thread-safe: lines(), wait() and stop() may be
    called from different threads."""

    def __init__(
        self,
        spec: ExecSpec,
        proc: subprocess.Popen[bytes],
        *,
        task_uid: int | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.spec = spec
        self._watchdog = watchdog
        self._task_uid = task_uid
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the child leads its own session and group
        self._proc = proc
        self._lock = threading.Lock()
        self._stopping = False
        self._stop_done = threading.Event()
        self._cancelled = False
        self._done = threading.Event()
        self._status: ExitStatus | None = None
        self._lines_taken = False
        self._watcher = threading.Thread(
            target=self._watch, name=f"fetchml-local-{spec.task_id[:12]}-{spec.attempt}", daemon=True
        )
        self._watcher.start()

    # -- the watcher: notices the exit, kills leftovers, reaps -------------------------------
    def _watch(self) -> None:
        # Wait for the exit without reaping: the group id stays reserved meanwhile, so the kill
        # below cannot reach an unrelated group that reused the number. (ChildProcessError: it
        # was already reaped elsewhere; nothing left to hold.)
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            stopping = self._stopping
        if not stopping:
            # The main process is gone: what it left running in its group goes with it.
            _signal_group(self.pgid, signal.SIGKILL)
        if self._task_uid is not None:
            try:
                _reclaim_outputs(self.spec, self._task_uid)
            except OSError as exc:  # collection then finds less; the attempt still ends
                log.warning("task %s: could not take back its output folder: %s", self.spec.task_id, exc)
        if self._watchdog is not None:  # while the zombie still holds the group id
            self._watchdog.forget(self.pgid)
        code = self._proc.wait()
        self._finish(code)

    def _finish(self, returncode: int) -> None:
        # Death by signal N is reported as exit code 128+N, as a shell and Docker do.
        code = 128 - returncode if returncode < 0 else returncode
        with self._lock:
            cancelled = self._cancelled
        if cancelled:
            status = ExitStatus(exit_code=code, error="cancelled", cancelled=True)
        elif returncode < 0:
            n = -returncode
            status = ExitStatus(exit_code=code, error=f"killed by signal {n} ({signal_name(n)})")
        elif returncode > 0:
            status = ExitStatus(exit_code=code, error=f"exit code {returncode}")
        else:
            status = ExitStatus(exit_code=0)
        self._status = status
        self._done.set()

    # -- Execution ------------------------------------------------------------------------------
    def lines(self) -> Iterator[str]:
        with self._lock:
            if self._lines_taken:
                raise RuntimeError("lines() can be iterated only once per execution")
            self._lines_taken = True
        stream = self._proc.stdout
        assert stream is not None
        try:
            # Bounded reads: a line without end must not grow the worker (see runner.lines).
            read1 = stream.read1  # type: ignore[attr-defined]  # a BufferedReader (Popen bufsize -1)
            yield from iter_lines(lambda: read1(READ_SIZE))
        finally:
            stream.close()

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        if not self._done.wait(timeout):
            return None
        return self._status

    def stop(self, grace: float = 10.0) -> None:
        with self._lock:
            if self._stopping:
                second = True
            else:
                second = False
                self._stopping = True
                if not self._done.is_set():
                    self._cancelled = True
        if second:  # idempotent: a second caller waits for the first stop to finish
            self._stop_done.wait(grace + 5.0)
            return
        try:
            self._stop(grace)
        finally:
            self._stop_done.set()

    def _stop(self, grace: float) -> None:
        # Descendants that left the group (setsid) are found through the process tree while the
        # main process still holds them; the group catches the rest, including orphans.
        try:
            escaped = [p for p in psutil.Process(self.pid).children(recursive=True) if _pgid(p) != self.pgid]
        except psutil.Error:
            escaped = []
        _signal_group(self.pgid, signal.SIGTERM)
        for p in escaped:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        deadline = time.monotonic() + max(grace, 0.0)
        while time.monotonic() < deadline:
            if self._done.is_set() and not _group_alive(self.pgid) and not any(_alive(p) for p in escaped):
                return
            time.sleep(_POLL)
        _signal_group(self.pgid, signal.SIGKILL)
        for p in escaped:
            with contextlib.suppress(psutil.Error):
                p.kill()
        # SIGKILL cannot be refused; give the kernel a moment to deliver it.
        self._done.wait(5.0)
        end = time.monotonic() + 5.0
        while _group_alive(self.pgid) and time.monotonic() < end:
            time.sleep(_POLL)

    def cleanup(self) -> None:
        """Nothing is held once the process has exited; close the pipe if lines() never ran."""
        if not self._done.is_set():
            self.stop(0)
        if not self._lines_taken and self._proc.stdout is not None:
            self._proc.stdout.close()

    @property
    def running(self) -> bool:
        return not self._done.is_set()


def _reclaim_outputs(spec: ExecSpec, task_uid: int) -> None:
    """Make the attempt's workspace and output folder the worker's again before the worker
    (root) reads them for upload.

    A process of the task's user may outlive the attempt (it left the group). Each folder is
    first made the worker's, mode 0700, and only then listed: from then on the task's user can
    no longer add, rename or swap entries in it, so what is listed is what is read. The
    workspace goes first, so `output` itself cannot be swapped for a link afterwards; an
    `output` that is not a real folder is removed. Files stay the task's (their content is its
    own); a file it does not own (a hard link to someone else's file) is removed, never
    uploaded. Links are never followed.
    """
    me, my_group = os.geteuid(), os.getegid()
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    output = spec.env.get("FETCHML_OUTPUT_DIR") or os.path.join(spec.workspace, "output")
    if os.path.dirname(os.path.abspath(output)) != os.path.abspath(spec.workspace):
        raise OSError(f"output folder {output} is not directly inside the workspace {spec.workspace}")
    name = os.path.basename(output)
    try:
        ws = os.open(spec.workspace, flags)
    except FileNotFoundError:
        return
    try:
        os.fchown(ws, me, my_group)
        os.fchmod(ws, 0o700)
        try:
            st = os.stat(name, dir_fd=ws, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=ws)
            return
        pending = [os.open(name, flags, dir_fd=ws)]
    finally:
        os.close(ws)
    while pending:
        fd = pending.pop()
        try:
            os.fchown(fd, me, my_group)
            os.fchmod(fd, 0o700)
            for entry in os.scandir(fd):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(os.open(entry.name, flags, dir_fd=fd))
                elif stat.S_ISREG(st.st_mode) and st.st_uid != task_uid:
                    os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def task_user(name: str) -> pwd.struct_passwd:
    """The account `run_as` names: it must exist, must not be root, and only root may switch to it."""
    try:
        user = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise ExecutorError(
            f"--run-as {name}: no such user on this machine (create one: useradd --system {name})"
        ) from None
    if user.pw_uid == 0 or user.pw_gid == 0:
        raise ExecutorError(
            f"--run-as {name}: tasks must run as an unprivileged user, not root or the root group"
        )
    if os.geteuid() != 0:
        raise ExecutorError(
            f"--run-as {name} needs the worker to run as root (it is uid {os.geteuid()}); "
            "without root, leave --run-as out and tasks run as the worker's own user"
        )
    return user


class LocalExecutor:
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

    def environment(self, spec: ExecSpec) -> dict[str, str]:
        # The worker's interpreter's folder first: `python`, `pip`, `torchrun` of the environment
        # fetchml runs in, as `.py` entry points get. HOME: the user's own when tasks run as the
        # worker's user (nothing to hide from them), the workspace when they run as another.
        bindir = os.path.dirname(sys.executable) if sys.executable else ""
        env = {
            "PATH": f"{bindir}:{DEFAULT_PATH}" if bindir else DEFAULT_PATH,
            "HOME": os.environ.get("HOME", "") if self._user is None else "",
        }
        env["HOME"] = env["HOME"] or str(spec.workspace)
        for name, value in os.environ.items():
            if name in _PASSED_BY_DEFAULT or name.startswith("CUDA_") or name in self.pass_env:
                env[name] = value
        for name in _SECRET_ENV:
            env.pop(name, None)
        env.update(spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
        env[LABEL_WORKER] = spec.worker_id
        env[LABEL_SERVER] = spec.server_id or ""
        env[LABEL_TASK] = spec.task_id
        env[LABEL_ATTEMPT] = str(spec.attempt)
        return env

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

    def remove_orphans(
        self, worker_id: str, live: set[tuple[str, int]], server_id: str | None = None
    ) -> list[str]:
        """Kill the process groups labelled for `worker_id` and `server_id` (FETCHML_LABEL_* in
        their environment; None matches only processes without a server label) whose
        (task, attempt) is not in `live`. Returns the pids that were signalled, as strings.

        Processes this executor started itself are never touched (they are this run's, not
        leftovers). Processes whose environment cannot be read (another user's) are skipped.
        """
        mine = {e.pgid for e in self._executions} | {os.getpgrp()}
        own_pid = os.getpid()
        orphans: dict[int, list[psutil.Process]] = {}
        for proc in psutil.process_iter(["status"]):
            if proc.pid == own_pid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(LABEL_WORKER) != worker_id or env.get(LABEL_SERVER, "") != (server_id or ""):
                continue  # another worker's, or a worker of the same name serving another server
            try:
                attempt = int(env.get(LABEL_ATTEMPT, ""))
            except ValueError:
                attempt = -1
            if (env.get(LABEL_TASK, ""), attempt) in live:
                continue
            pgid = _pgid(proc)
            if pgid is None or pgid in mine:
                continue
            orphans.setdefault(pgid, []).append(proc)
        removed: list[str] = []
        for pgid, procs in orphans.items():
            _signal_group(pgid, signal.SIGKILL)
            for p in procs:  # members that left the group
                with contextlib.suppress(psutil.Error):
                    p.kill()
                removed.append(str(p.pid))
            log.warning("killed orphaned process group %d (%d processes)", pgid, len(procs))
        return removed
