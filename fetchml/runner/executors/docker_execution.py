"""One attempt's container once started: its log followed, its exit waited for and explained,
stopped and removed; a Docker daemon that restarts meanwhile is waited for (bounded)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from fetchml.runner.executors.base import ExecSpec, ExitStatus
from fetchml.runner.executors.docker_daemon import _daemon_unreachable
from fetchml.runner.executors.docker_spec import format_gb
from fetchml.runner.lines import LineSplitter
from fetchml.runner.watchdog import Watchdog

# The docker executor's logger, as before its parts had modules of their own.
log = logging.getLogger("fetchml.runner.executors.docker")

_POLL = 0.1
_CATCH_UP = 100  # log entries read again when a follow stream ends
# How long an attempt waits for a restarting Docker daemon before giving its container up.
DAEMON_RETURN_WAIT = 120.0
RUNTIME_LOST = "the Docker daemon restarted while the task ran"


def _split_entry(frame: bytes) -> tuple[bytes, bytes]:
    """A log entry asked for with timestamps=True: b"<RFC 3339 nano> <payload>"."""
    stamp, sep, payload = frame.partition(b" ")
    return (stamp, payload) if sep else (b"", frame)


class DockerExecution:
    """One attempt running in a container. lines(), wait() and stop() may run in different
    threads. Read lines() and wait() before cleanup(): cleanup removes the container."""

    def __init__(
        self, spec: ExecSpec, container: Any, memory_gb: float | None, watchdog: Watchdog | None = None
    ) -> None:
        self.spec = spec
        self._watchdog = watchdog
        self.container = container
        self.id: str = container.id
        self.name: str = container.name
        self._memory_gb = memory_gb
        self._lock = threading.Lock()
        self._stopped = False
        self._cancelled = False
        self._status: ExitStatus | None = None
        self._removed = False
        # Set when a call to the daemon broke mid-run: a daemon restart stops every container
        # (without live-restore), which says nothing about the task itself.
        self._daemon_lost = False

    def _await_daemon(self) -> bool:
        """Wait (bounded) for the daemon to answer again after a broken connection."""
        self._daemon_lost = True
        deadline = time.monotonic() + DAEMON_RETURN_WAIT
        while time.monotonic() < deadline:
            try:
                self.container.client.ping()
                return True
            except Exception:  # any failure means "not back yet"
                time.sleep(0.5)
        return False

    def lines(self) -> Iterator[str]:
        """Follows the container's log. Docker may end a follow stream when the container stops
        before its last entry is written (seen with a final line without newline), so when the
        stream ends the last entries are read once more and whatever was not seen is added.
        Entries are told apart by their timestamps (nanoseconds)."""
        import docker.errors

        splitter = LineSplitter()  # lines capped as they arrive (runner.lines)
        recent: deque[tuple[bytes, bytes]] = deque(maxlen=_CATCH_UP)
        try:
            stream = self.container.logs(stream=True, follow=True, stdout=True, stderr=True, timestamps=True)
        except docker.errors.NotFound:
            return
        try:
            for frame in stream:
                entry = _split_entry(frame)
                recent.append(entry)
                yield from splitter.feed(entry[1])
        except docker.errors.NotFound:  # removed while streaming
            pass
        except Exception as exc:
            if not _daemon_unreachable(exc):
                raise
            self._daemon_lost = True
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        for _, payload in self._missed(recent):
            yield from splitter.feed(payload)
        yield from splitter.end()

    def _missed(self, recent: deque[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        import docker.errors

        try:
            self.wait(timeout=10)  # the entry is written by the time the container is reported gone
            tail = self.container.client.api.logs(
                self.id, stdout=True, stderr=True, stream=True, follow=False, timestamps=True, tail=_CATCH_UP
            )
            entries = [_split_entry(frame) for frame in tail]
        except docker.errors.DockerException:
            return []
        except Exception as exc:
            if not _daemon_unreachable(exc):
                raise
            self._daemon_lost = True
            return []
        seen = set(recent)
        # Only entries after the last one seen: older ones were shown (or fell out of `recent`).
        last = recent[-1] if recent else None
        if last is not None and last in entries:
            entries = entries[len(entries) - entries[::-1].index(last) :]
        return [e for e in entries if e not in seen]

    def _state(self) -> dict[str, Any]:
        self.container.reload()
        state: dict[str, Any] = self.container.attrs.get("State", {})
        return state

    def wait(self, timeout: float | None = None) -> ExitStatus | None:

        if self._status is not None:
            return self._status
        for _ in range(3):  # a daemon that restarts again and again is given up on
            try:
                return self._wait(timeout)
            except Exception as exc:
                if not _daemon_unreachable(exc):
                    raise
                log.warning("task %s: lost the Docker daemon; waiting for it to return", self.spec.task_id)
                if not self._await_daemon():
                    break
        status = ExitStatus(exit_code=None, error=RUNTIME_LOST, runtime_lost=True)
        self._status = status
        return status

    def _wait(self, timeout: float | None) -> ExitStatus | None:
        import docker.errors

        try:
            if timeout is not None:
                deadline = time.monotonic() + timeout
                while self._state().get("Status") not in ("exited", "dead"):
                    if time.monotonic() >= deadline:
                        return None
                    time.sleep(min(_POLL, max(deadline - time.monotonic(), 0.0)))
            result = self.container.wait()  # returns at once when it has exited
            state = self._state()
        except docker.errors.NotFound:
            status = self._status or ExitStatus(
                exit_code=None, error="the container disappeared before its exit was recorded"
            )
            self._status = status
            return status
        code = result.get("StatusCode", state.get("ExitCode"))
        status = self._exit_status(int(code) if code is not None else None, state)
        if self._daemon_lost and not status.cancelled and not (code == 0 and status.error is None):
            status = ExitStatus(exit_code=status.exit_code, error=RUNTIME_LOST, runtime_lost=True)
        self._status = status
        return status

    def _exit_status(self, code: int | None, state: dict[str, Any]) -> ExitStatus:
        oom = bool(state.get("OOMKilled"))
        with self._lock:
            cancelled = self._cancelled
        if cancelled:
            return ExitStatus(exit_code=code, error="cancelled", oom_killed=oom, cancelled=True)
        if oom and code == 0:
            # Some process was OOM-killed (e.g. a data loader worker) but the task coped with it.
            log.warning("task %s: a process was killed for memory, but the task exited 0", self.spec.task_id)
            return ExitStatus(exit_code=0)
        if oom:
            if self._memory_gb is not None:
                why = f"killed after exceeding the memory limit of {format_gb(self._memory_gb)} GB"
            else:
                why = "killed by the kernel's OOM killer"
            return ExitStatus(exit_code=code, error=f"out of memory: {why}", oom_killed=True)
        if code == 0:
            return ExitStatus(exit_code=0)
        daemon_error = state.get("Error") or ""
        if code == 137:
            error = "killed (exit code 137)"
        elif code is None:
            error = "the container's exit code is unknown"
        else:
            error = f"exit code {code}"
        if daemon_error:
            error = f"{error}: {daemon_error}"
        return ExitStatus(exit_code=code, error=error)

    def stop(self, grace: float = 10.0) -> None:
        import docker.errors

        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            running = self._state().get("Status") in ("running", "restarting", "paused", "created")
        except docker.errors.NotFound:
            return
        if not running:
            return
        with self._lock:
            self._cancelled = True
        # Docker sends the stop signal (SIGTERM), waits `grace` whole seconds, then SIGKILLs.
        with contextlib.suppress(docker.errors.NotFound):
            self.container.stop(timeout=max(0, math.ceil(grace)))

    def cleanup(self) -> None:
        import docker.errors

        if self._removed:
            return
        if self._status is None:
            with contextlib.suppress(docker.errors.APIError):
                if self._state().get("Status") in ("exited", "dead"):
                    self.wait()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        self._removed = True
        if self._watchdog is not None:
            self._watchdog.forget_container(self.id)
        if self._status is None:
            self._status = ExitStatus(exit_code=None, error="removed before it finished")

    @property
    def running(self) -> bool:
        return self._status is None and not self._removed
