"""`fetchml logs` and `fetchml artifacts` as subprocesses, against a real server where the test
plays the worker by hand through the client."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fetchml.cli.logs import exit_status
from fetchml.core.protocol import Assignment
from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env
from tests.harness import REPO, Keys, ServerHandle
from tests.protocol_kit import FakeWorker, registered, submit

Cli = Callable[..., Result]


@pytest.fixture
def w(shared_server: ServerHandle, keys: Keys) -> Iterator[FakeWorker]:
    yield from registered(shared_server, keys.worker, keys.admin)


@pytest.fixture
def running(shared_server: ServerHandle, keys: Keys, w: FakeWorker) -> Assignment:
    t = submit(shared_server, keys.user, "cli-logs")
    a = w.must_claim()
    assert a.task.id == t.id
    w.report(a, "running")
    return a


# --- logs -------------------------------------------------------------------------------------


def test_logs_prints_the_log(cli: Cli, keys: Keys, w: FakeWorker, running: Assignment) -> None:
    lines = [f"epoch {i} loss {1 / (i + 1):.3f}" for i in range(12)] + [
        "[bold]not markup[/bold]",
        "ünï ✓",
        "",
    ]
    w.log(running, 0, lines)
    tid = running.task.id
    result = assert_ok(cli(["logs", tid], keys.user))
    assert result.stdout == "".join(line + "\n" for line in lines)
    assert result.stderr == ""
    assert assert_ok(cli(["logs", tid, "--tail", "2"], keys.user)).stdout == "ünï ✓\n\n"
    assert assert_ok(cli(["logs", tid, "--offset", "10"], keys.user)).stdout.splitlines() == lines[10:]
    assert assert_ok(cli(["logs", tid, "--offset", "99"], keys.user)).stdout == ""

    page = json.loads(assert_ok(cli(["logs", tid, "--json", "--tail", "3"], keys.user)).stdout)
    assert page == {
        "task_id": tid,
        "status": "running",
        "offset": 12,
        "next_offset": 15,
        "lines": lines[12:],
        "done": False,
    }


def test_logs_pages_to_the_end(cli: Cli, keys: Keys, w: FakeWorker, running: Assignment) -> None:
    """The server sends at most 5000 lines a page; the command keeps asking."""
    lines = [f"{i}" for i in range(5003)]
    w.log(running, 0, lines[:5000])
    w.log(running, 5000, lines[5000:])
    result = assert_ok(cli(["logs", running.task.id], keys.user))
    assert result.stdout.splitlines() == lines
    w.run_to(running, "collecting", "completed")
    page = json.loads(assert_ok(cli(["logs", running.task.id, "--json"], keys.user)).stdout)
    assert (page["offset"], page["next_offset"], page["done"], page["status"]) == (0, 5003, True, "completed")
    assert page["lines"] == lines


class Follower:
    """`fetchml logs -f` running in the background; its stdout lines arrive on a queue."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}  # flushing is the command's job
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fetchml", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, timeout: float = 10) -> str | None:
        return self.lines.get(timeout=timeout)

    def finish(self, timeout: float = 15) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.mark.parametrize(
    ("end", "flags", "expected_exit"),
    [
        ("completed", [], 0),
        ("failed", [], 0),
        ("failed", ["--exit-code"], 3),
        ("completed", ["--exit-code"], 0),
    ],
    ids=["completed", "failed-plain", "failed-exit-code", "completed-exit-code"],
)
def test_logs_follow_streams_until_the_task_ends(
    shared_server: ServerHandle,
    keys: Keys,
    w: FakeWorker,
    running: Assignment,
    end: str,
    flags: list[str],
    expected_exit: int,
) -> None:
    w.log(running, 0, ["already there"])
    f = Follower(["logs", running.task.id, "-f", *flags], cli_env(shared_server, keys.user))
    try:
        assert f.next() == "already there"
        # Each line shows up while the task is still running (the command does not buffer).
        w.log(running, 1, ["live 1"])
        assert f.next() == "live 1"
        w.log(running, 2, ["live 2", "live 3"])
        assert (f.next(), f.next()) == ("live 2", "live 3")
        assert f.proc.poll() is None  # still following
        if end == "completed":
            w.run_to(running, "collecting", "completed")
        else:
            w.report(running, "failed", exit_code=3)
        assert f.next() is None  # stdout closed: the command is done
    finally:
        code, stderr = f.finish()
    assert code == expected_exit, stderr
    assert "Traceback" not in stderr


def test_logs_follow_from_tail_of_an_ended_task(
    cli: Cli, keys: Keys, w: FakeWorker, running: Assignment
) -> None:
    w.log(running, 0, ["a", "b", "c"])
    w.report(running, "failed", exit_code=-9)
    assert assert_ok(cli(["logs", running.task.id, "-f", "--tail", "2"], keys.user)).stdout == "b\nc\n"
    result = cli(["logs", running.task.id, "-f", "--exit-code"], keys.user)
    assert (result.returncode, result.stdout) == (137, "a\nb\nc\n")  # killed by signal 9


def test_logs_errors(cli: Cli, keys: Keys, running: Assignment) -> None:
    tid = running.task.id
    assert_one_line_error(cli(["logs", "no-such-task"], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["logs", "no-such-task", "-f"], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["logs", tid], None), "UNAUTHORIZED", 1)
    for args in (["--tail", "1", "--offset", "1"], ["-f", "--json"], ["--exit-code"]):
        r = cli(["logs", tid, *args], keys.user)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r
        assert r.stderr.startswith("error: ")
    assert cli(["logs", tid, "--tail", "-1"], keys.user).returncode == 2


def test_logs_into_a_closed_pipe_is_quiet(
    shared_server: ServerHandle, keys: Keys, w: FakeWorker, running: Assignment
) -> None:
    w.log(running, 0, [f"line {i}" for i in range(5000)])
    proc = subprocess.run(
        f"{sys.executable} -m fetchml logs {running.task.id} | head -1",
        shell=True,
        env=cli_env(shared_server, keys.user),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout == "line 0\n"
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("completed", 0, 0),
        ("completed", None, 0),
        ("failed", 2, 2),
        ("failed", 0, 1),
        ("failed", None, 1),
        ("failed", -15, 143),
        ("failed", 300, 1),
    ],
)
def test_exit_status(status: str, code: int | None, expected: int) -> None:
    assert exit_status(status, code) == expected


# --- artifacts --------------------------------------------------------------------------------


def upload(srv: ServerHandle, key: str, a: Assignment, tmp: Path, files: dict[str, bytes]) -> None:
    with srv.client(key) as c:
        for rel, data in files.items():
            src = tmp / "src" / str(a.attempt) / rel
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(data)
            c.artifacts.upload(a.task.id, a.attempt, rel, src)


def test_artifacts_table_and_json(
    cli: Cli, shared_server: ServerHandle, keys: Keys, w: FakeWorker, running: Assignment, tmp_path: Path
) -> None:
    w.report(running, "collecting")
    files = {
        "model/weights.bin": os.urandom(3000),
        "metrics.json": b'{"acc": 0.9}',
        "notes [draft].txt": b"x",
    }
    upload(shared_server, w.key, running, tmp_path, files)
    tid = running.task.id

    out = assert_ok(cli(["artifacts", tid], keys.user)).stdout.splitlines()
    assert out[0].split() == ["PATH", "SIZE", "SHA256", "ATTEMPT"]
    rows = {line.split()[0]: line.split() for line in out[2:-1]}
    assert rows["metrics.json"] == [
        "metrics.json",
        "12",
        "B",
        hashlib.sha256(files["metrics.json"]).hexdigest()[:12],
        "1",
    ]
    assert rows["model/weights.bin"][1:3] == ["2.9", "KiB"]
    assert "notes [draft].txt" in "\n".join(out)  # user data is never read as markup
    assert out[-1] == "3 artifacts, 2.9 KiB"

    listed = json.loads(assert_ok(cli(["artifacts", tid, "--json"], keys.user)).stdout)
    assert [(a["path"], a["size"], a["attempt"]) for a in listed] == [
        ("metrics.json", 12, 1),
        ("model/weights.bin", 3000, 1),
        ("notes [draft].txt", 1, 1),
    ]
    assert listed[1]["sha256"] == hashlib.sha256(files["model/weights.bin"]).hexdigest()


def test_artifacts_download_takes_the_newest_attempt(
    cli: Cli, shared_server: ServerHandle, keys: Keys, w: FakeWorker, running: Assignment, tmp_path: Path
) -> None:
    w.report(running, "collecting")
    upload(
        shared_server, w.key, running, tmp_path, {"old-only.txt": b"old", "shared.txt": b"attempt 1"}
    )
    assert w.register().lost_tasks == [running.task.id]  # the worker restarts; attempt 2 runs
    a2 = w.must_claim()
    w.run_to(a2, "running", "collecting")
    new = {"shared.txt": b"attempt 2", "deep/er/ckpt.pt": os.urandom(20000)}
    upload(shared_server, w.key, a2, tmp_path, new)
    w.report(a2, "completed", exit_code=0)

    dest = tmp_path / "results" / "run1"
    result = assert_ok(cli(["artifacts", running.task.id, "--download", str(dest)], keys.user))
    assert result.stdout == f"Downloaded 2 files (19.5 KiB) of attempt 2 to {dest}\n"
    got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == new

    again = json.loads(
        assert_ok(cli(["artifacts", running.task.id, "-d", str(dest), "--json"], keys.user)).stdout
    )
    assert (again["attempt"], again["directory"]) == (2, str(dest))
    assert sorted(a["path"] for a in again["artifacts"]) == ["deep/er/ckpt.pt", "shared.txt"]

    listing = assert_ok(cli(["artifacts", running.task.id], keys.user)).stdout
    assert "old-only.txt" in listing  # the listing shows every attempt


def test_artifacts_none_and_errors(cli: Cli, keys: Keys, running: Assignment, tmp_path: Path) -> None:
    tid = running.task.id
    assert assert_ok(cli(["artifacts", tid], keys.user)).stdout == f"Task {tid} has no artifacts\n"
    assert json.loads(assert_ok(cli(["artifacts", tid, "--json"], keys.user)).stdout) == []
    r = assert_ok(cli(["artifacts", tid, "--download", str(tmp_path / "d")], keys.user))
    assert r.stdout == f"Task {tid} has no artifacts; nothing downloaded\n"
    assert not (tmp_path / "d").exists()
    assert_one_line_error(cli(["artifacts", "no-such-task"], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["artifacts", tid], keys.worker), "FORBIDDEN", 1)
