"""`fetchml workers`, `fetchml priority` and `fetchml scheduler status` as subprocesses, against a
real server where the test plays the worker by hand through the client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env, run, unreachable_url
from tests.harness import Keys, ServerHandle, contract_fields
from tests.protocol_kit import FakeWorker, cancel_leftovers, get_task, submit

Cli = Callable[..., Result]

WORKER_FIELDS = contract_fields("Worker")
STATUS_FIELDS = contract_fields("SchedulerStatus")


@pytest.fixture
def w(shared_server: ServerHandle, keys: Keys) -> Iterator[FakeWorker]:
    worker = FakeWorker(shared_server, keys.worker)
    worker.register(cpu_cores=12, memory_gb=48, gpus=[0, 1], gpu_type="A100", batch_slots=2, hostname="gpu-7")
    yield worker
    worker.close()
    cancel_leftovers(shared_server, keys.admin)


def test_help_lists_the_new_commands() -> None:
    out = assert_ok(run(["--help"], cli_env())).stdout
    for command in ("workers", "scheduler", "priority"):
        assert f" {command} " in out, out
    assert " drain " in assert_ok(run(["workers", "--help"], cli_env())).stdout
    assert " status " in assert_ok(run(["scheduler", "--help"], cli_env())).stdout


def test_workers_list_and_show(cli: Cli, shared_server: ServerHandle, keys: Keys, w: FakeWorker) -> None:
    t = submit(shared_server, keys.user, "cli-gpu-job", gpu=1)
    a = w.must_claim()
    assert a.task.id == t.id

    listed = json.loads(assert_ok(cli(["workers", "list", "--json"], keys.admin)).stdout)
    mine = next(x for x in listed if x["id"] == w.name)
    assert mine.keys() >= WORKER_FIELDS
    assert mine["status"] == "active" and mine["active_tasks"] == [t.id]
    assert mine["slots"]["batch_available"] == 1 and mine["capabilities"]["gpu_type"] == "A100"

    table = assert_ok(cli(["workers", "list"], keys.admin)).stdout
    row = next(line for line in table.splitlines() if line.startswith(w.name))
    assert row.split()[:8] == [w.name, "active", "2", "x", "A100", "12", "48", "GB"], row
    assert "1/2" in row
    assert f"{len(listed)} workers (" in table

    shown = json.loads(assert_ok(cli(["workers", "show", w.name, "--json"], keys.admin)).stdout)
    assert shown == mine | {"last_heartbeat": shown["last_heartbeat"]}

    panel = assert_ok(cli(["workers", "show", w.name], keys.admin)).stdout
    for needle in (f"Worker {w.name}", "active", "gpu-7", "2 x A100", "1 free of 2", t.id, "0: A100"):
        assert needle in panel, (needle, panel)


def test_worker_commands_need_an_admin_and_a_known_worker(cli: Cli, keys: Keys, w: FakeWorker) -> None:
    for args in (["workers", "list"], ["workers", "show", w.name], ["workers", "drain", w.name]):
        assert_one_line_error(cli(args, keys.user), "FORBIDDEN", 1)
    for args in (["workers", "show", "no-such-worker"], ["workers", "drain", "no-such-worker"]):
        assert_one_line_error(cli(args, keys.admin), "NOT_FOUND", 1)
    line = assert_one_line_error(
        run(["workers", "list"], cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="fml_x")),
        "SERVER_UNREACHABLE",
        1,
    )
    assert "fetchml serve" in line


def test_workers_drain(cli: Cli, shared_server: ServerHandle, keys: Keys, w: FakeWorker) -> None:
    t = submit(shared_server, keys.user, "cli-drain")
    a = w.must_claim()
    assert a.task.id == t.id
    out = assert_ok(cli(["workers", "drain", w.name], keys.admin)).stdout
    assert out.startswith(f"Draining {w.name}:") and out.count("\n") == 1
    assert_ok(cli(["workers", "drain", w.name], keys.admin))  # again: accepted

    shown = json.loads(assert_ok(cli(["workers", "show", w.name, "--json"], keys.admin)).stdout)
    assert shown["status"] == "draining" and shown["active_tasks"] == [t.id]
    assert w.heartbeat(a).drain is True
    w.run_to(a, "running", "collecting", "completed")
    assert w.heartbeat().status.value == "offline"
    assert "offline" in assert_one_line_error(cli(["workers", "drain", w.name], keys.admin), "CONFLICT", 1)

    events = json.loads(
        assert_ok(cli(["audit", "events", "--type", "scheduler_drain", "--json"], keys.admin)).stdout
    )["events"]
    assert [e["resource"] for e in events].count(f"worker:{w.name}") == 1


@pytest.mark.slow
def test_priority(cli: Cli, shared_server: ServerHandle, keys: Keys) -> None:
    t = submit(shared_server, keys.user, "cli-reprio", priority=3)
    out = assert_ok(cli(["priority", t.id, "8"], keys.user)).stdout
    assert out == f"Priority of {t.id} (cli-reprio) is now 8\n"
    assert get_task(shared_server, keys.user, t.id).priority == 8

    body = json.loads(assert_ok(cli(["priority", t.id, "2", "--json"], keys.admin)).stdout)
    assert body["id"] == t.id and body["priority"] == 2 and "priority_aged" in body

    events = json.loads(
        assert_ok(cli(["audit", "events", "--type", "priority_changed", "--json"], keys.admin)).stdout
    )["events"]
    mine = [(e["user_id"], e["metadata"]["new_priority"]) for e in events if e["resource"] == f"task:{t.id}"]
    assert mine == [("root", 2), ("alice", 8)]

    assert_one_line_error(cli(["priority", t.id, "9"], keys.other), "FORBIDDEN", 1)
    assert_one_line_error(cli(["priority", "no-such-task", "9"], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["priority", t.id, "9"], keys.worker), "FORBIDDEN", 1)
    with shared_server.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{t.id}").status_code == 204
    assert_one_line_error(cli(["priority", t.id, "9"], keys.user), "CONFLICT", 1)
    assert get_task(shared_server, keys.user, t.id).priority == 2


@pytest.mark.parametrize("value", ["0", "11"])
def test_priority_out_of_range_is_exit_2_before_any_request(value: str) -> None:
    # The server URL is dead: exit 2 (not 1, SERVER_UNREACHABLE) proves nothing was sent.
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="fml_x")
    line = assert_one_line_error(run(["priority", "abc", value], env), "VALIDATION_ERROR", 2)
    assert "priority" in line


def test_priority_that_is_not_a_number_is_a_usage_error() -> None:
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="fml_x")
    result = run(["priority", "abc", "x"], env)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr


def test_scheduler_status(cli: Cli, shared_server: ServerHandle, keys: Keys, w: FakeWorker) -> None:
    submit(shared_server, keys.user, "cli-status-queued")
    data = json.loads(assert_ok(cli(["scheduler", "status", "--json"], keys.admin)).stdout)
    assert set(data) == STATUS_FIELDS
    assert data["workers_active"] >= 1 and data["batch_queue_depth"] >= 1
    assert data["workers_total"] >= data["workers_active"] + data["workers_draining"]

    # The table and the JSON are two reads: a worker of an earlier test may go offline (its
    # heartbeats stopped) in between. Compare a table read between two JSON reads that agree.
    for _ in range(5):
        out = assert_ok(cli(["scheduler", "status"], keys.admin)).stdout
        again = json.loads(assert_ok(cli(["scheduler", "status", "--json"], keys.admin)).stdout)
        if {k: v for k, v in again.items() if k != "timestamp"} == {
            k: v for k, v in data.items() if k != "timestamp"
        }:
            break
        data = again
    offline = data["workers_total"] - data["workers_active"] - data["workers_draining"]
    assert (
        f"{data['workers_total']} ({data['workers_active']} active, {data['workers_draining']} draining, "
        f"{offline} offline)"
    ) in out
    rows = {line.split("  ")[0].strip(): line.split()[-1] for line in out.splitlines() if "  " in line}
    assert rows["queued (batch)"] == str(data["batch_queue_depth"])
    assert rows["queued (service)"] == "0" and rows["reservations"] == "0"

    assert_one_line_error(cli(["scheduler", "status"], keys.user), "FORBIDDEN", 1)
    assert_one_line_error(cli(["scheduler", "status", "--json"], keys.worker), "FORBIDDEN", 1)
