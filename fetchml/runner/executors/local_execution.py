"""A started local attempt: a process group whose exit is watched (leftovers of the group killed,
the output folder taken back with `run_as`), whose output is read as lines and which stops with
SIGTERM, a grace, then SIGKILL. See fetchml.runner.executors.local."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psutil

from fetchml.runner.executors.base import ExecSpec, ExitStatus
from fetchml.runner.executors.local_groups import _alive, _group_alive, _pgid, _signal_group, signal_name
from fetchml.runner.executors.local_sandbox import _reclaim_outputs
from fetchml.runner.lines import READ_SIZE, iter_lines
from fetchml.runner.watchdog import Watchdog

# The local executor's logger, as before its parts had modules of their own.
log = logging.getLogger("fetchml.runner.executors.local")

_POLL = 0.05


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
