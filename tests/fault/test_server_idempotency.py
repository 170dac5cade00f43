"""POST /v1/tasks with an Idempotency-Key: one task per (user, key), on both backends; the CLI
sends a key and retries once after a timeout, and the retry gets the original task."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable

import httpx
import psutil
import pytest

from tests.fault.server_kit import SqliteLock, is_envelope
from tests.harness import REPO, ServerHandle, run_cli, wait_for

BODY = {"job_name": "idem", "entrypoint": "train.py", "args": "--lr 0.1"}


@pytest.fixture
def srv(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="1000000")


def _count(srv: ServerHandle, job_name: str) -> int:
    return int(srv.db_exec("SELECT COUNT(*) FROM tasks WHERE job_name = ?", (job_name,))[0][0])


def test_same_key_same_body_is_one_task(srv: ServerHandle) -> None:
    key = srv.make_key("alice", "user")
    idem = str(uuid.uuid4())
    with srv.http(key) as http:
        first = http.post("/v1/tasks", json=BODY, headers={"Idempotency-Key": idem})
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        # Same body spelled differently (key order, an explicit default): the same request.
        again = http.post(
            "/v1/tasks",
            json={"args": "--lr 0.1", "entrypoint": "train.py", "job_name": "idem"},
            headers={"Idempotency-Key": idem},
        )
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        # Without a key every submission is a new task.
        assert http.post("/v1/tasks", json=BODY).status_code == 201
    assert _count(srv, "idem") == 2
    rows = srv.db_exec("SELECT user_id, key, task_id FROM idempotency_keys")
    assert rows == [("alice", idem, first.json()["id"])]


def test_same_key_other_body_is_409(srv: ServerHandle) -> None:
    key = srv.make_key("alice", "user")
    with srv.http(key) as http:
        assert http.post("/v1/tasks", json=BODY, headers={"Idempotency-Key": "k-1"}).status_code == 201
        r = http.post("/v1/tasks", json={**BODY, "args": "--lr 0.2"}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 409 and is_envelope(r) and r.json()["code"] == "CONFLICT", r.text
    assert _count(srv, "idem") == 1


def test_keys_are_per_user(srv: ServerHandle) -> None:
    alice, bob = srv.make_key("alice", "user"), srv.make_key("bob", "user")
    ids = set()
    for key in (alice, bob):
        with srv.http(key) as http:
            r = http.post("/v1/tasks", json=BODY, headers={"Idempotency-Key": "shared"})
            assert r.status_code == 201 and "idempotent-replayed" not in r.headers, r.text
            ids.add(r.json()["id"])
    assert len(ids) == 2 and _count(srv, "idem") == 2


@pytest.mark.parametrize("bad", ["x" * 256, "caf\u00e9", "tab\there", ""])
def test_bad_keys_are_422(srv: ServerHandle, bad: str) -> None:
    key = srv.make_key("alice", "user")
    # httpx refuses non-ASCII header values: send the raw bytes the way a broken client would.
    with srv.http(key) as http:
        r = http.post("/v1/tasks", json=BODY, headers=[(b"Idempotency-Key", bad.encode("utf-8"))])
    assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", r.text
    assert _count(srv, "idem") == 0


def test_concurrent_duplicates_make_one_task(srv: ServerHandle) -> None:
    key = srv.make_key("alice", "user")
    idem = str(uuid.uuid4())
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def submit() -> None:
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": key}, timeout=30) as http:
            start.wait(10)
            r = http.post("/v1/tasks", json=BODY, headers={"Idempotency-Key": idem})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 16
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 15
    assert _count(srv, "idem") == 1


def test_cli_sends_a_key(srv: ServerHandle) -> None:
    key = srv.make_key("alice", "user")
    env = {**srv.env(), "FETCHML_SERVER_URL": srv.url, "FETCHML_API_KEY": key}
    res = run_cli(["submit", "cli-idem", "-e", "train.py"], env=env)
    assert res.returncode == 0, res.stderr
    (task_id,) = re.findall(r"Queued task (\w+)", res.stdout)
    rows = srv.db_exec("SELECT task_id, key FROM idempotency_keys WHERE user_id = 'alice'")
    assert len(rows) == 1 and rows[0][0] == task_id
    uuid.UUID(rows[0][1])  # a fresh uuid4 per submit


def test_cli_retries_once_after_a_timeout_and_gets_the_original(sqlite_server_factory: Callable[..., ServerHandle]) -> None:
    """The server takes the request but cannot commit (another process holds the SQLite write
    lock) for longer than the CLI's timeout: the CLI retries with the same key; once the lock
    goes, the first request creates the task and the retry returns that same task."""
    srv = sqlite_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="1000000")  # the stall is an SQLite lock
    key = srv.make_key("alice", "user")
    env = {**srv.env(), "FETCHML_SERVER_URL": srv.url, "FETCHML_API_KEY": key, "FETCHML_TIMEOUT": "1.5"}
    lock = SqliteLock(srv.db_path).acquire()
    try:
        cli = subprocess.Popen(
            [sys.executable, "-m", "fetchml", "submit", "stalled", "-e", "train.py"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        # The lock goes only once the retry is on the wire (a second connection from the CLI):
        # the first attempt has then timed out on the client's side, whatever the CLI's start-up
        # time on a loaded machine.
        ports: set[int] = set()

        def second_connection() -> bool:
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(cli.pid).net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == srv.port:
                        ports.add(c.laddr.port)
            return len(ports) >= 2 or cli.poll() is not None

        wait_for(second_connection, timeout=30, what="the CLI's retry")
    finally:
        lock.release()
    out, err = cli.communicate(timeout=60)
    res = subprocess.CompletedProcess(cli.args, cli.returncode, out, err)
    assert res.returncode == 0, res.stderr
    (task_id,) = re.findall(r"Queued task (\w+)", res.stdout)
    assert srv.db_exec("SELECT id FROM tasks WHERE job_name = 'stalled'") == [(task_id,)]
    # Access lines go out in batches (at most 0.2 s late): wait for both.
    def posts() -> list[str]:
        return [line for line in srv.log().splitlines() if "POST /v1/tasks 201" in line]

    with contextlib.suppress(AssertionError):
        wait_for(lambda: len(posts()) >= 2, timeout=5, what="both access lines")
    assert len(posts()) == 2, posts()  # the first (its client gone) and the replay


def test_cli_says_the_task_may_exist_when_both_attempts_time_out(sqlite_server_factory: Callable[..., ServerHandle]) -> None:
    srv = sqlite_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="1000000")  # the stall is an SQLite lock
    key = srv.make_key("alice", "user")
    env = {**srv.env(), "FETCHML_SERVER_URL": srv.url, "FETCHML_API_KEY": key, "FETCHML_TIMEOUT": "0.7"}
    with SqliteLock(srv.db_path):
        res = run_cli(["submit", "lost", "-e", "train.py"], env=env, timeout=60)
    assert res.returncode == 1
    assert "unreachable" not in res.stderr.lower() and "Cannot reach" not in res.stderr, res.stderr
    assert "did not answer within" in res.stderr
    assert "may or may not have been created" in res.stderr
