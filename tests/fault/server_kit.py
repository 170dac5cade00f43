"""Real faults for the server-side fault tests: an external SQLite lock, a private PostgreSQL
that a test may restart, a small tmpfs that fills up, and bounded waits and request loops."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.backends import skip_or_fail
from tests.harness import die_with_parent, free_port

HEARTBEAT_ENV = {
    "FETCHML_HEARTBEAT_INTERVAL": "0.5",
    "FETCHML_HEARTBEAT_TIMEOUT": "3",
    "FETCHML_SWEEP_INTERVAL": "0.2",
    "FETCHML_RATE_LIMIT_PER_MINUTE": "1000000",
    "FETCHML_CLAIM_WAIT": "1",
}




def is_envelope(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and {"error", "code", "trace_id"} <= body.keys()


# -- an external SQLite lock ----------------------------------------------------------------------

_LOCKER = r"""
import sqlite3, sys
path, readers = sys.argv[1], sys.argv[2] == "1"
c = sqlite3.connect(path, isolation_level=None, timeout=5)
if readers:
    # In WAL mode BEGIN EXCLUSIVE still lets readers in; exclusive locking mode does not.
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
c.execute("BEGIN EXCLUSIVE")
c.execute("INSERT OR REPLACE INTO server_meta(key, value) VALUES ('fault_lock', 'held')")
print("locked", flush=True)
sys.stdin.read()
c.execute("ROLLBACK")
c.close()
"""


class SqliteLock:
    """Another process holding the SQLite write lock (and with readers_too, every lock) until
    release(). Kill -9 of the test releases it too: the OS drops the process's file locks."""

    def __init__(self, db_path: Path, *, readers_too: bool = False) -> None:
        self.db_path = db_path
        self.readers_too = readers_too
        self.proc: subprocess.Popen[str] | None = None

    def acquire(self, timeout: float = 30) -> SqliteLock:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(self.db_path), "1" if self.readers_too else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded by the locker's own 5 s busy timeout
        assert line.strip() == "locked", f"the locker did not get the lock: {line!r}"
        return self

    def release(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> SqliteLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- a private PostgreSQL -------------------------------------------------------------------------


def pg_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def require_pg_binaries() -> Path:
    """The PostgreSQL bin dir; skip without one (fail under CI=true: the fault suite must run)."""
    found = pg_bin_dir()
    if found is None or os.geteuid() != 0:
        reason = "PostgreSQL binaries (initdb, pg_ctl) and root are needed for a private instance"
        skip_or_fail(reason)
    return found


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb in a temp dir, run as the postgres user on
    a free port), so restarting it disturbs nobody else."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fml-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        shutil.chown(self.root, "postgres", "postgres")

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.root,
        )

    def init(self) -> PrivatePostgres:
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.root / "pg.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def exec(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            cur = c.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(require_pg_binaries()).init()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


# -- a small filesystem that fills up --------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size_mb: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="fml-tmpfs-", dir="/tmp"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(path: Path) -> Path:
    """Writes `path` until the filesystem under it is full (ENOSPC); returns it."""
    chunk = b"\0" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 64):
            with contextlib.suppress(OSError):
                for _ in range(1 << 16):
                    os.write(fd, chunk[:size])
    finally:
        os.close(fd)
    return path
