"""Real servers on free loopback ports, real databases (SQLite files or PostgreSQL databases, see
tests/backends.py), the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from fetchml.client import FetchmlClient
from fetchml.core.enums import Role
from fetchml.host.clock import write_offset_file
from fetchml.services.keys import create_key_op
from fetchml.services.principal import LOCAL_OPERATOR
from fetchml.services.write_queue import run_write
from fetchml.store.db import Database
from tests.backends import (
    POSTGRESQL,
    SQLITE,
    create_database,
    drop_database,
    pg_exec,
    require_backend,
    selected_backends,
    skip_or_fail,
)

REPO = Path(__file__).resolve().parents[1]


def die_with_parent() -> None:
    """Children get SIGTERM if the test process dies, so an aborted run leaves no servers behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    # COLUMNS/LINES out too: pytest-xdist workers set COLUMNS=80, which would make the CLI under
    # test wrap its tables instead of printing them wide, as it does when piped.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FETCHML_") and k not in ("COLUMNS", "LINES")
    }
    env.update(extra)
    return env


# db_path -> handle, for the sqlite_exec shim below (a PostgreSQL server's db_path is no file).
_HANDLES_BY_DB_PATH: dict[Path, ServerHandle] = {}


@dataclass
class ServerHandle:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # None: SQLite in data_dir (fetchml's default). A postgresql+psycopg:// URL: that database,
    # given to the server as FETCHML_DATABASE_URL (see tests/backends.py for who creates it).
    database_url: str | None = None

    def __post_init__(self) -> None:
        _HANDLES_BY_DB_PATH[self.db_path] = self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend(self) -> str:
        return POSTGRESQL if self.database_url and self.database_url.startswith("postgresql") else SQLITE

    @property
    def db_path(self) -> Path:
        """The SQLite file (only meaningful on SQLite; prefer db_url / db_exec)."""
        return self.data_dir / "fetchml.db"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL of the database the server uses."""
        return self.database_url or f"sqlite:///{self.db_path}"

    def db_cli_args(self) -> list[str]:
        """How `fetchml keys` finds this server's database."""
        if self.database_url:
            return ["--database-url", self.database_url]
        return ["--data-dir", str(self.data_dir)]

    def db_exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement straight on the server's database, `?` placeholders, committed.

        Rows as the driver gives them: on PostgreSQL JSON columns come back as text (as on
        SQLite), timestamps as naive UTC datetimes (SQLite: their text), booleans as bool
        (SQLite: 0/1). Pass timestamps as naive UTC (text or datetime) and booleans as bool.
        """
        if self.backend == POSTGRESQL:
            assert self.database_url is not None
            return pg_exec(self.database_url, sql, params)
        return _sqlite_file_exec(self.db_path, sql, params)

    def task_transitions(self, task_id: str) -> list[tuple[str | None, str]]:
        """The task's moves as the feed recorded them (`task_transition` events), oldest first:
        (from, to), from None for the submission."""
        rows = self.db_exec(
            "SELECT data FROM events WHERE task_id = ? AND type = 'task_transition' ORDER BY id", (task_id,)
        )
        return [(d.get("from"), d["to"]) for d in (json.loads(r[0]) for r in rows)]

    @property
    def clock_file(self) -> Path:
        """The server's FETCHML_CLOCK_OFFSET_FILE. In data_dir: a restart on it keeps its time."""
        return self.data_dir / "clock-offset"

    def clock_offset(self) -> float:
        try:
            return float(self.clock_file.read_text())
        except FileNotFoundError:
            return 0.0

    def advance_clock(self, seconds: float) -> None:
        """Moves the server's clock (aging, leases, reservations, rate limits) forward, at once:
        the next request sees it. Only on a server the test owns, never on shared_server."""
        assert seconds >= 0, seconds
        write_offset_file(self.clock_file, self.clock_offset() + seconds)

    def env(self) -> dict[str, str]:
        extra = {"FETCHML_DATABASE_URL": self.database_url} if self.database_url else {}
        # Test servers get their keys from the test (make_key), not the first-run admin key of
        # `fetchml serve` on loopback (tests/cli/test_cli_first_run.py turns it back on).
        extra.setdefault("FETCHML_LOCAL_ADMIN_KEY", "false")
        extra.update(self.env_extra)
        # An empty FETCHML_CLOCK_OFFSET_FILE (benchmarks): the real clock, as in production,
        # without a stat of the offset file per clock read.
        clock = extra.pop("FETCHML_CLOCK_OFFSET_FILE", str(self.clock_file))
        if clock:
            extra["FETCHML_CLOCK_OFFSET_FILE"] = clock
        return base_env(FETCHML_DATA_DIR=str(self.data_dir), FETCHML_CONFIG=str(self.data_dir / "client.toml"), **extra)

    def start(self, timeout: float = 30.0) -> ServerHandle:
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServerHandle:
        """Starts the process without waiting for it (call wait_ready). From the main thread:
        the child is killed when the thread that started it ends (PR_SET_PDEATHSIG)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fetchml",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--no-worker",
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent,
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> ServerHandle:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        relaunches = 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # free_port() only picked a port that was free then: a server of another xdist
                # worker, or a client's outbound connection, may have taken it since.
                if relaunches and "address already in use" in self.log():
                    relaunches -= 1
                    self.port = free_port()
                    self.launch()
                    continue
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # Our own process must hold the port: a /health answer alone may come from
                # another test's server that took the port first.
                if self._listening() and httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy in {timeout}s:\n{self.log()}")

    def _listening(self) -> bool:
        assert self.proc is not None
        try:
            conns = psutil.Process(self.proc.pid).net_connections("tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port for c in conns)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def make_key(self, user: str, role: Role | str = Role.USER, *, worker_name: str | None = None) -> str:
        """Creates a key straight in the server's database, as `fetchml keys create` does. A
        worker key is bound to `worker_name` (default: `user`)."""
        db = Database(self.db_url)
        try:
            db.migrate()
            return run_write(db, create_key_op(user, Role(role), LOCAL_OPERATOR, worker_name=worker_name)).key
        finally:
            db.dispose()

    def client(self, key: str | None) -> FetchmlClient:
        return FetchmlClient(self.url, key, timeout=30)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


class ServerPool:
    """Makes ServerHandles on one backend and owns their PostgreSQL databases.

    A handle made again on a data_dir seen before gets the same database (a restart of that
    server); every database is dropped by close().
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.handles: list[ServerHandle] = []
        self._urls: dict[Path, str] = {}

    def handle(self, data_dir: Path, env: dict[str, str]) -> ServerHandle:
        url = None
        if self.backend == POSTGRESQL:
            url = self._urls.get(data_dir)
            if url is None:
                url = self._urls[data_dir] = create_database()
        handle = ServerHandle(data_dir=data_dir, env_extra=env, database_url=url)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        for h in self.handles:
            h.stop()
        for url in self._urls.values():
            drop_database(url)
        self._urls.clear()


def run_cli(
    args: list[str], *, env: dict[str, str], input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fetchml", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        cwd=REPO,
    )


def sqlite_exec(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Deprecated: use ServerHandle.db_exec. Kept so that `sqlite_exec(srv.db_path, ...)` keeps
    working on every backend: a server's db_path routes to that server's own database."""
    handle = _HANDLES_BY_DB_PATH.get(Path(path))
    if handle is not None:
        return handle.db_exec(sql, params)
    return _sqlite_file_exec(Path(path), sql, params)


def _sqlite_file_exec(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    try:
        cur = conn.execute(sql, params)
        rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


@contextmanager
def servers_on_one_database(
    tmp_path: Path, names: str = "ab", env: dict[str, str] | None = None, *, together: bool = False
) -> Iterator[list[ServerHandle]]:
    """One server per letter of `names` on one new PostgreSQL database (several servers, as an
    operator scales out), started in order, or `together` (all run the migrations on the empty
    database at once); stopped and the database dropped afterwards. Without PostgreSQL: a
    skip, a failure under CI=true."""
    if POSTGRESQL not in selected_backends():
        skip_or_fail("FETCHML_TEST_BACKENDS leaves PostgreSQL out")
    require_backend(POSTGRESQL)
    url = create_database()
    servers = [ServerHandle(data_dir=tmp_path / n, env_extra=dict(env or {}), database_url=url) for n in names]
    try:
        if together:
            for s in servers:
                s.launch()
            for s in servers:
                s.wait_ready(60)
        else:
            for s in servers:
                s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()
        drop_database(url)


@dataclass
class Keys:
    admin: str
    user: str
    other: str
    worker: str


def make_keys(handle: ServerHandle) -> Keys:
    """admin `root`, users `alice` and `bob`, worker `gpu-box-1`, created straight in the database."""
    return Keys(
        admin=handle.make_key("root", "admin"),
        user=handle.make_key("alice", "user"),
        other=handle.make_key("bob", "user"),
        worker=handle.make_key("gpu-box-1", "worker"),
    )



def post_task(handle: ServerHandle, key: str, **body: Any) -> dict[str, Any]:
    """POST /v1/tasks over plain HTTP (job_name defaults to "job"); the created task's JSON."""
    body.setdefault("job_name", "job")
    with handle.http(key) as http:
        r = http.post("/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


# --- helpers for the server test-suite ------------------------------------------------------

ERROR_KEYS = {"error", "code", "trace_id"}
CONTRACT_SCHEMAS: dict[str, Any] = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())["components"][
    "schemas"
]
# The contract's closed set of error codes, read from the contract itself (not from the server).
CONTRACT_CODES = set(CONTRACT_SCHEMAS["ErrorResponse"]["properties"]["code"]["enum"])


def contract_fields(schema: str) -> set[str]:
    """The properties of one of the contract's schemas (docs/openapi.yaml), field by field."""
    return set(CONTRACT_SCHEMAS[schema]["properties"])
# Strings that would mean an error body leaks implementation details.
LEAK_MARKERS = (
    "Traceback",
    "traceback",
    "sqlalchemy",
    "SQLAlchemy",
    "sqlite",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    'File "',
    ".py",
    "litestar",
    "Exception",
)


def expect_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Asserts `resp` is a contract error envelope with this status and code; returns the body."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["code"] == code, body
    assert body["code"] in CONTRACT_CODES
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["trace_id"], str) and body["trace_id"], body
    assert resp.headers.get("x-trace-id") == body["trace_id"], (resp.headers, body)
    for marker in LEAK_MARKERS:
        assert marker not in resp.text, f"error body leaks {marker!r}: {resp.text}"
    return body  # type: ignore[no-any-return]


def wait_for(
    cond: Callable[[], Any], timeout: float = 30, what: str = "condition", *, every: float = 0.05
) -> Any:
    """Polls `cond` until it returns something truthy, and returns that; fails the test after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_log(handle: ServerHandle, needle: str, timeout: float = 10.0) -> str:
    """The access line is written after the response is sent: poll the server log for it."""
    deadline = time.monotonic() + timeout
    while True:
        text = handle.log()
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in server log:\n{text[-4000:]}")
        time.sleep(0.05)
