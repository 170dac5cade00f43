"""A watchdog that ends a worker's tasks when the worker dies without stopping them.

A task's processes run in a session of their own (local executor) or in a container (docker), so
they do not die with a worker that is SIGKILLed or OOM-killed. The watchdog is a tiny process
started by the worker (this file, run by path with the standard library only) in a session of its
own. It reads from a pipe whose write end only the worker holds: the worker tells it, one line
each, which process groups (`+pg 123` / `-pg 123`) and containers (`+ct ID` / `-ct ID`) are
running. When the pipe closes, however the worker ended, it SIGKILLs the groups and force-removes
the containers it still knows, and exits. It ignores SIGTERM, SIGINT and SIGHUP, so a terminal's
Ctrl-C or a service manager's stop reaches the worker (which then drains) and never leaves tasks
without a watchdog; it never outlives the worker either.

Runs as the worker's user (root when tasks run as another user with --run-as, so it may signal
them). Not covered: a process that left its task's group (setsid) and a watchdog that is itself
SIGKILLed together with the worker; `remove_orphans` at the worker's next start covers those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger("fetchml.runner.watchdog")


class Watchdog:
    """The worker's side: starts the watchdog on first use and keeps it told. Thread-safe.
    Never raises: without a watchdog, tasks are still found by `remove_orphans`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._known: set[str] = set()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("cannot start the task watchdog (%s): tasks may outlive a killed worker", exc)
            return None
        assert proc.stdin is not None
        try:  # a watchdog started again learns what the previous one knew
            for item in sorted(self._known):
                proc.stdin.write(f"+{item}\n".encode())
            proc.stdin.flush()
        except OSError:
            return None
        return proc

    def _send(self, line: str) -> None:
        with self._lock:
            sign, item = line[0], line[1:]
            if sign == "+":
                self._known.add(item)
            else:
                self._known.discard(item)
            if self._proc is None or self._proc.poll() is not None:
                if sign == "-":
                    return  # a new watchdog starts knowing only what is live
                self._proc = self._spawn()
                return
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(f"{line}\n".encode())
                self._proc.stdin.flush()
            except OSError:
                log.warning("the task watchdog is gone; starting another")
                self._proc = self._spawn()

    def watch(self, pgid: int) -> None:
        self._send(f"+pg {pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-pg {pgid}")

    def watch_container(self, container_id: str) -> None:
        self._send(f"+ct {container_id}")

    def forget_container(self, container_id: str) -> None:
        self._send(f"-ct {container_id}")

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def close_if_idle(self) -> None:
        """End the watchdog if nothing is registered (after a shutdown): it exits without
        killing anything. A later `watch` starts another."""
        with self._lock:
            if self._known:
                return
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def _remove_containers(ids: set[str]) -> None:
    try:
        import docker

        client = docker.from_env(timeout=30)
    except Exception as exc:
        print(
            f"fetchml watchdog: cannot reach Docker to remove {len(ids)} container(s): {exc}", file=sys.stderr
        )
        return
    for cid in sorted(ids):
        try:
            client.api.remove_container(cid, force=True)
        except Exception as exc:
            print(f"fetchml watchdog: container {cid[:12]}: {exc}", file=sys.stderr)


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    containers: set[str] = set()
    for raw in sys.stdin.buffer:
        parts = raw.decode(errors="replace").split()
        if len(parts) != 2 or parts[0][:1] not in "+-":
            continue
        op, kind, value = parts[0][0], parts[0][1:], parts[1]
        if kind == "pg" and value.isdigit():
            (groups.add if op == "+" else groups.discard)(int(value))
        elif kind == "ct":
            (containers.add if op == "+" else containers.discard)(value)
    # The worker is gone: whatever it still ran goes with it.
    for pgid in sorted(groups):
        if pgid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    if groups:
        print(f"fetchml watchdog: worker gone, killed {len(groups)} task process group(s)", file=sys.stderr)
    if containers:
        _remove_containers(containers)
        print(f"fetchml watchdog: worker gone, removed {len(containers)} container(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
