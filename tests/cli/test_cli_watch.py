"""`fetchml watch` as a subprocess, against a real server and a real `fetchml worker --executor
local` running the tasks: the scheduler feed as JSON lines and as the live view, one task's
transitions and log until it ends (exiting with its exit code), and the refusals."""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env, run, unreachable_url
from tests.e2e.conftest import Cluster, gated, local_cluster
from tests.harness import REPO, ServerPool, die_with_parent


@pytest.fixture(scope="module")
def box(module_server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server and one local-executor worker for the whole module."""
    with local_cluster(module_server_pool, tmp_path_factory.mktemp("watch")) as c:
        yield c


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A file a task waits for (at most 60 s), so the test decides when it goes on."""
    return tmp_path / "go"


class Proc:
    """`fetchml ARGS` running, its stdout and stderr read line by line as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "fetchml", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.lines: dict[str, queue.Queue[str | None]] = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        self._threads = [
            threading.Thread(target=self._pump, args=(self.p.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.p.stderr, "err"), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, pipe: Any, name: str) -> None:
        for line in pipe:
            self.lines[name].put(line.rstrip("\n"))
        self.lines[name].put(None)

    def line(self, name: str, pred: Callable[[str], bool] = lambda _: True, timeout: float = 20.0) -> str:
        """The next line on `name` that matches (the ones before it are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching line on std{name} within {timeout}s; seen {self.seen[name]}"
            try:
                item = self.lines[name].get(timeout=left)
            except queue.Empty:
                continue
            assert item is not None, f"std{name} closed (exit {self.p.poll()}); seen {self.seen[name]}"
            self.seen[name].append(item)
            if pred(item):
                return item

    def finish(self, timeout: float = 30.0) -> Result:
        rc = self.p.wait(timeout)
        for t in self._threads:
            t.join(5)
        rest: dict[str, list[str]] = {}
        for name, q in self.lines.items():
            rest[name] = list(self.seen[name])
            while (item := q.get_nowait() if not q.empty() else None) is not None:
                rest[name].append(item)
        out = "".join(x + "\n" for x in rest["out"])
        err = "".join(x + "\n" for x in rest["err"])
        return subprocess.CompletedProcess(self.p.args, rc, out, err)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for p in made:
        p.kill()


def watch(box: Cluster, procs: list[Proc], args: list[str], key: str) -> Proc:
    p = Proc(["watch", *args], cli_env(box.server, key))
    procs.append(p)
    return p


def cli(box: Cluster, args: list[str], key: str) -> Result:
    return run(args, cli_env(box.server, key))


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


# --- the scheduler ---------------------------------------------------------------------------


def test_json_shows_the_snapshot_then_each_transition_of_a_task_submitted_meanwhile(
    box: Cluster, procs: list[Proc]
) -> None:
    p = watch(box, procs, ["--json"], box.admin)
    snap = json.loads(p.line("out"))
    assert snap["event"] == "snapshot" and snap["id"] == snap["data"]["last_event_id"]
    assert set(snap["data"]) >= {"status", "workers", "queue", "resumed"}
    assert [(w["id"], w["status"]) for w in snap["data"]["workers"]] == [("w1", "active")]

    # Outlasts the worker's running-report window, so `running` is a transition of its own.
    tid = box.submit(entrypoint="sh -c 'echo hi; sleep 0.2'")
    p.line("out", lambda s: '"task_transition"' in s and tid in s and '"completed"' in s)
    p.p.send_signal(signal.SIGINT)  # Ctrl-C: the way to stop watching
    result = p.finish()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    seen = events(result.stdout.splitlines())
    assert seen[0] == snap
    ids = [e["id"] for e in seen[1:]]
    assert ids == sorted(set(ids)) and ids[0] > snap["id"], ids  # in order, none twice
    mine = [e["data"] for e in seen if e["event"] == "task_transition" and e["data"]["task_id"] == tid]
    assert mine[0]["to"] == "queued" and "from" not in mine[0]
    assert mine[-1]["to"] == "completed" and mine[-1]["exit_code"] == 0
    assert "running" in [m["to"] for m in mine]
    for before, after in itertools.pairwise(mine):
        assert after["from"] == before["to"]
    # One queue_depth per commit that changes it. The writer commits several requests together,
    # so a claim that reaches it with the submission shares its commit: then the only depth seen
    # is 0 (queued and placed at once).
    depth = [e["data"] for e in seen if e["event"] == "queue_depth"]
    assert depth and depth[-1]["depth"] == 0


def test_max_events_bounds_the_json_feed(box: Cluster) -> None:
    result = assert_ok(cli(box, ["watch", "--json", "--max-events", "1"], box.admin))
    [only] = events(result.stdout.splitlines())
    assert only["event"] == "snapshot"


def test_the_live_view_shows_queue_workers_and_running_tasks_and_stops_on_ctrl_c(
    box: Cluster, procs: list[Proc], gate: Path
) -> None:
    tid = box.submit(entrypoint=gated(gate, "echo done"), job_name="live-view")
    box.wait_status(tid, "running")
    try:
        p = watch(box, procs, [], box.admin)
        p.line("err", lambda s: s.startswith("fetchml: watching "))
        p.p.send_signal(signal.SIGINT)
        result = p.finish()
    finally:
        gate.touch()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    for title in ("Queue", "Workers", "Running", "Latest events"):
        assert title in out.splitlines(), out
    running = next(line for line in out.splitlines() if line.startswith(tid))
    assert running.split()[:5] == [tid, "live-view", "alice", "running", "w1"], running
    worker = next(line for line in out.splitlines() if line.startswith("w1 "))
    cells = worker.split()
    assert cells[:2] == ["w1", "active"] and cells[-1] == "1", worker  # one task on it
    box.wait_status(tid, "completed")


def test_a_user_key_cannot_watch_the_scheduler(box: Cluster) -> None:
    line = assert_one_line_error(cli(box, ["watch"], box.user), "FORBIDDEN", exit_code=1)
    assert "needs an admin key" in line and "fetchml watch TASK_ID" in line
    assert_one_line_error(cli(box, ["watch", "--json"], box.user), "FORBIDDEN", exit_code=1)


def test_no_server_and_bad_usage(box: Cluster) -> None:
    env = cli_env(None, box.admin, FETCHML_SERVER_URL=unreachable_url())
    assert_one_line_error(run(["watch", "--json"], env), "SERVER_UNREACHABLE", exit_code=1)
    for args in (["watch", "x", "--max-events", "2"], ["watch", "--tail", "3"], ["watch", "--no-logs"]):
        result = cli(box, args, box.admin)
        assert result.returncode == 2 and result.stdout == "", (args, result)
        assert result.stderr.startswith("error: "), result.stderr


# --- one task --------------------------------------------------------------------------------


def test_watch_task_exits_with_the_exit_code_of_a_task_that_exits_3(
    box: Cluster, procs: list[Proc], gate: Path
) -> None:
    tid = box.submit(entrypoint=gated(gate, "echo bye; exit 3"))
    p = watch(box, procs, [tid], box.user)
    first = p.line("err")
    assert first.startswith(f"fetchml: task {tid} (e2e) is "), first
    gate.touch()
    result = p.finish(60)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "bye\n"
    err = result.stderr.splitlines()
    assert any("-> failed exit 3" in line for line in err), err
    assert err[-1].startswith(f"fetchml: task {tid} failed: "), err
    assert "Traceback" not in result.stderr

    # The task has ended: the stream is its snapshot and its end, the exit code the same.
    again = cli(box, ["watch", "--json", tid], box.user)
    assert again.returncode == 3, again.stderr
    snap, end = events(again.stdout.splitlines())
    assert snap["event"] == "snapshot" and snap["data"]["terminal"] is True
    assert snap["data"]["task"]["id"] == tid and snap["data"]["task"]["status"] == "failed"
    assert end["event"] == "end" and "id" not in end
    assert end["data"]["outcome"] == "failed" and end["data"]["exit_code"] == 3
    quiet = cli(box, ["watch", "--no-logs", tid], box.admin)
    assert quiet.returncode == 3 and quiet.stdout == "", quiet


def test_watch_task_follows_a_task_to_completion_and_exits_0(
    box: Cluster, procs: list[Proc], gate: Path
) -> None:
    tid = box.submit(entrypoint=gated(gate, "echo one; echo two"))
    p = watch(box, procs, [tid], box.user)
    p.line("err", lambda s: s.startswith(f"fetchml: task {tid} (e2e) is "))
    gate.touch()
    result = p.finish(60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo\n"
    err = result.stderr.splitlines()
    # Without declared outputs there is nothing to collect: one report ends the task.
    assert any(line.endswith("running -> completed exit 0") for line in err), err
    assert err[-1] == f"fetchml: task {tid} completed", err

    tail = assert_ok(cli(box, ["watch", tid, "--tail", "1"], box.user))
    assert tail.stdout == "two\n"


def test_watch_task_refusals(box: Cluster) -> None:
    assert_one_line_error(cli(box, ["watch", "0" * 32], box.user), "NOT_FOUND", exit_code=1)
    assert_one_line_error(cli(box, ["watch", "--json", "no-such-task"], box.admin), "NOT_FOUND", exit_code=1)
    tid = box.submit(entrypoint="sh -c 'true'")
    bob = box.server.make_key("bob", "user")
    result = cli(box, ["watch", tid], bob)
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.startswith(("error: FORBIDDEN: ", "error: NOT_FOUND: ")), result.stderr
    box.wait_status(tid, "completed")
