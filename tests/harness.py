"""Real servers on free loopback ports, real SQLite files, the real CLI as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fetchml.client import FetchmlClient
from fetchml.core.enums import Role
from fetchml.services.keys import create_key_op
from fetchml.services.principal import LOCAL_OPERATOR
from fetchml.services.uow import run_write
from fetchml.store.db import Database

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETCHML_")}
    env.update(extra)
    return env


@dataclass
class ServerHandle:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "fetchml.db"

    def env(self) -> dict[str, str]:
        return base_env(
            FETCHML_DATA_DIR=str(self.data_dir),
            FETCHML_CONFIG=str(self.data_dir / "client.toml"),
            **self.env_extra,
        )

    def start(self, timeout: float = 30.0) -> ServerHandle:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy in {timeout}s:\n{self.log()}")

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

    def make_key(self, user: str, role: Role | str = Role.USER) -> str:
        """Creates a key straight in the server's database, as `fetchml keys create` does."""
        db = Database(f"sqlite:///{self.db_path}")
        try:
            db.migrate()
            return run_write(db, create_key_op(user, Role(role), LOCAL_OPERATOR)).key
        finally:
            db.dispose()

    def client(self, key: str | None) -> FetchmlClient:
        return FetchmlClient(self.url, key, timeout=30)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


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
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    try:
        cur = conn.execute(sql, params)
        rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


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


# --- helpers for the server test-suite ------------------------------------------------------

ERROR_KEYS = {"error", "code", "trace_id"}
CONTRACT_CODES = {
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
    "VALIDATION_ERROR",
}
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
