"""How `fetchml worker` gets its key without handing it to the tasks it runs.

A command line is readable by every local user (/proc/PID/cmdline), so the key never comes
from argv. It comes, in this order, from a file readable by its owner only (--api-key-file),
from FETCHML_API_KEY, or from the client config file. The kernel keeps showing a process's
original environment in /proc/PID/environ even after os.environ drops a variable, so a worker
that found its key in the environment executes itself again (same pid, same argv) without it,
handing the key over through an inherited pipe that is read once and closed: afterwards the key
exists only in the worker's memory. The worker then marks itself non-dumpable, so a process of
the same user (a task of a local executor without --run-as) can neither read its /proc files
(environ, memory, fds) nor ptrace it.

Only stdlib here: imported by the command before anything heavy.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

__all__ = ["WorkerKeyError", "harden_process", "worker_key"]

ENV_KEY = "FETCHML_API_KEY"
# Set only by the worker for its own re-execution: the descriptor the key is read from.
ENV_KEY_FD = "FETCHML_API_KEY_FD"

ARGV_REFUSED = (
    "--api-key is refused by `fetchml worker`: a command line is readable by every local user "
    "(/proc/PID/cmdline). Pass the key in the environment (FETCHML_API_KEY) or in a file only "
    "its owner can read (--api-key-file PATH, chmod 600)."
)


class WorkerKeyError(Exception):
    """The key cannot be read safely; the message says why and what to do."""


def _read_fd(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode().strip()


def read_key_file(path: Path) -> str:
    """The key in `path`, refusing a file that anyone but its owner may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise WorkerKeyError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise WorkerKeyError(f"--api-key-file {path} is not a regular file")
    if st.st_mode & 0o077:
        os.close(fd)
        raise WorkerKeyError(
            f"--api-key-file {path} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); make it the owner's only: chmod 600 {path}"
        )
    key = _read_fd(fd)
    if not key:
        raise WorkerKeyError(f"--api-key-file {path} is empty")
    return key


def _can_reexec() -> bool:
    # Only when this process is the `fetchml worker` command itself (not, say, a test runner
    # invoking the command function in-process).
    argv = getattr(sys, "orig_argv", [])
    return bool(sys.executable) and "worker" in argv[1:]


def _reexec_with_key(key: str) -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, key.encode())  # a key is far below the pipe's buffer
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {k: v for k, v in os.environ.items() if k != ENV_KEY}
    env[ENV_KEY_FD] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def worker_key(api_key_file: Path | None) -> str | None:
    """The worker's key from --api-key-file or FETCHML_API_KEY (None: look in the config file),
    with FETCHML_API_KEY gone from the environment and from /proc/self/environ."""
    handed = os.environ.pop(ENV_KEY_FD, None)
    if handed is not None:  # the re-executed worker: the key waits in the pipe
        os.environ.pop(ENV_KEY, None)
        try:
            return _read_fd(int(handed))
        except (OSError, ValueError) as exc:
            raise WorkerKeyError(f"could not read the key handed over in {ENV_KEY_FD}: {exc}") from None
    from_env = os.environ.pop(ENV_KEY, None)
    key = read_key_file(api_key_file) if api_key_file is not None else (from_env or None)
    if from_env is not None and key is not None and _can_reexec():
        _reexec_with_key(key)  # does not return
    return key


def harden_process() -> None:
    """Non-dumpable: only root may read this process's /proc files or ptrace it (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_DUMPABLE = 4
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
