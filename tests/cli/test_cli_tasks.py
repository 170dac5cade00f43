"""submit / tasks / status / cancel / queue, config precedence and server errors, on a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fetchml.core.models import CreateTaskRequest
from tests.cli.conftest import (
    HEX64,
    TASK_ID_RE,
    Result,
    assert_ok,
    assert_one_line_error,
    cli_env,
    run,
)
from tests.harness import ServerHandle

Cli = Callable[..., Result]


def submit_direct(server: ServerHandle, key: str, name: str, **fields: Any) -> str:
    """Queue a task through the Python client (fast), for tests about other commands."""
    with server.client(key) as c:
        return c.tasks.create(CreateTaskRequest(job_name=name, entrypoint="train.py", **fields)).id


def test_submit_human_sends_every_option(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    args = [
        "submit", "resnet-a", "--entrypoint", "train.py", "--args=--epochs 10 --lr 0.1",
        "--priority", "7", "--cpu", "4", "--memory-gb", "16", "--gpu", "2", "--gpu-type", "A100",
        "--image", "pytorch/pytorch:2.3", "--max-retries", "1", "--node-count", "2",
        "--dataset", f"name=imagenet,source=https://data.example/in.tar,sha256={HEX64},mount_path=data/in",
        "--dataset", f"name=labels,source=/srv/labels.csv,sha256={HEX64.upper()}",
        "--meta", "team=vision", "--meta", "note=lr sweep",
    ]  # fmt: skip
    result = assert_ok(cli(args, keys.user))
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = TASK_ID_RE.match(lines[0])
    assert match and match["job"] == "resnet-a" and match["prio"] == "7", lines[0]

    with shared_server.client(keys.user) as c:
        task = c.tasks.get(match[1])
    assert (task.user_id, task.entrypoint, task.args) == ("alice", "train.py", "--epochs 10 --lr 0.1")
    assert (task.cpu, task.memory_gb, task.gpu, task.gpu_type) == (4, 16, 2, "A100")
    assert (task.image, task.max_retries, task.node_count) == ("pytorch/pytorch:2.3", 1, 2)
    assert [(d.name, d.source, d.sha256, d.mount_path) for d in task.dataset_specs] == [
        ("imagenet", "https://data.example/in.tar", HEX64, "data/in"),
        ("labels", "/srv/labels.csv", HEX64, None),
    ]
    assert task.metadata == {"team": "vision", "note": "lr sweep"}


def test_submit_json_prints_only_the_task(cli: Cli, keys: Any) -> None:
    result = assert_ok(
        cli(["submit", "json-job", "-e", "python -m pkg", "--meta", "k=v", "--json"], keys.user)
    )
    task = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert re.fullmatch(r"[0-9a-f]{32}", task["id"])
    assert (task["job_name"], task["status"], task["priority"]) == ("json-job", "queued", 5)
    assert task["entrypoint"] == "python -m pkg" and task["metadata"] == {"k": "v"}
    assert result.stderr == ""


def test_submit_validation_errors_send_nothing(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    with shared_server.client(keys.admin) as c:
        before = c.tasks.list(limit=1).total
    line = assert_one_line_error(cli(["submit", "bad name!", "-e", "x"], keys.user), "VALIDATION_ERROR", 2)
    assert "job_name" in line
    line = assert_one_line_error(
        cli(["submit", "ok", "-e", "x", "--priority", "11"], keys.user), "VALIDATION_ERROR", 2
    )
    assert "priority" in line
    with shared_server.client(keys.admin) as c:
        assert c.tasks.list(limit=1).total == before


def test_tasks_table_json_and_filters(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    mine = [submit_direct(shared_server, keys.other, f"bob-{i}", priority=i + 1) for i in range(3)]

    page = json.loads(assert_ok(cli(["tasks", "--user", "bob", "--json"], keys.user)).stdout)
    assert set(page) == {"tasks", "total", "limit", "offset"}
    assert [t["id"] for t in page["tasks"]] == mine[::-1]  # newest first
    assert page["total"] == 3 and all(t["user_id"] == "bob" for t in page["tasks"])

    table = assert_ok(cli(["tasks", "--user", "bob"], keys.user)).stdout
    for header in ("ID", "JOB", "STATUS", "PRIO", "USER", "CREATED", "PENDING/ERROR"):
        assert header in table
    for i, task_id in enumerate(mine):
        row = next(line for line in table.splitlines() if line.startswith(task_id))
        assert f"bob-{i}" in row and "queued" in row and "bob" in row and f" {i + 1} " in row
    assert table.rstrip().endswith("3 of 3 tasks")

    paged = assert_ok(cli(["tasks", "--user", "bob", "--limit", "1", "--offset", "1"], keys.user)).stdout
    assert mine[1] in paged and mine[0] not in paged and mine[2] not in paged
    assert "1 of 3 tasks (offset 1); next page: --offset 2" in paged

    queued = json.loads(assert_ok(cli(["tasks", "--status", "queued", "--json"], keys.user)).stdout)
    assert queued["tasks"] and {t["status"] for t in queued["tasks"]} == {"queued"}


def test_status_shows_the_task(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    task_id = submit_direct(
        shared_server,
        keys.user,
        "status-job",
        priority=3,
        gpu=1,
        args="--fast",
        metadata={"note": "[red]not markup[/red]"},
        dataset_specs=[{"name": "cifar", "source": "/d/cifar.tar", "sha256": HEX64}],
    )
    out = assert_ok(cli(["status", task_id], keys.user)).stdout
    for needle in (
        task_id,
        "status-job",
        "queued",
        "alice",
        "train.py",
        "--fast",
        "gpu 1",
        "cifar",
        "/d/cifar.tar",
    ):
        assert needle in out, f"{needle!r} missing:\n{out}"
    assert "note=[red]not markup[/red]" in out  # user text is printed, never interpreted

    data = json.loads(assert_ok(cli(["status", task_id, "--json"], keys.user)).stdout)
    with shared_server.client(keys.user) as c:
        again = c.tasks.get(task_id).model_dump(mode="json", exclude_none=True)
    # A queued task's priority_aged grows while it waits (FETCHML_PRIORITY_AGING_PER_HOUR).
    assert data["priority_aged"] <= again["priority_aged"] < data["priority_aged"] + 0.1
    assert {**data, "priority_aged": None} == {**again, "priority_aged": None}


def test_cancel_then_status_and_conflict(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    task_id = submit_direct(shared_server, keys.user, "to-cancel")
    assert assert_ok(cli(["cancel", task_id], keys.user)).stdout == f"Cancelled {task_id}\n"

    data = json.loads(assert_ok(cli(["status", task_id, "--json"], keys.user)).stdout)
    assert (data["status"], data["error"]) == ("failed", "cancelled")
    row = next(
        line
        for line in assert_ok(cli(["tasks", "--status", "failed"], keys.user)).stdout.splitlines()
        if line.startswith(task_id)
    )
    assert "failed" in row and row.rstrip().endswith("cancelled")

    line = assert_one_line_error(cli(["cancel", task_id], keys.user), "CONFLICT", 1)
    assert "trace " in line  # the server's trace id, for support


def test_cancel_errors(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    assert_one_line_error(cli(["cancel", "0" * 32], keys.user), "NOT_FOUND", 1)
    assert_one_line_error(cli(["status", "0" * 32, "--json"], keys.user), "NOT_FOUND", 1)
    alices = submit_direct(shared_server, keys.user, "not-bobs")
    assert_one_line_error(cli(["cancel", alices], keys.other), "FORBIDDEN", 1)


def test_an_id_cannot_reach_another_route(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    # Unescaped, `../keys/<id>` would be DELETE /v1/keys/<id>: revoking a key instead.
    victim = shared_server.make_key("victim", "user")
    with shared_server.client(keys.admin) as c:
        key_id = next(k.id for k in c.keys.list() if k.user_id == "victim")
    assert_one_line_error(cli(["cancel", f"../keys/{key_id}"], keys.admin), "NOT_FOUND", 1)
    assert_ok(cli(["queue", "--json"], victim))


def test_queue(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    submit_direct(shared_server, keys.user, "queue-job")
    stats = json.loads(assert_ok(cli(["queue", "--json"], keys.user)).stdout)
    assert set(stats) == {"queued", "running", "completed", "failed", "workers"}
    with shared_server.client(keys.user) as c:
        assert stats["queued"] == c.tasks.list(status="queued", limit=1).total >= 1
    table = assert_ok(cli(["queue"], keys.user)).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["QUEUED", "RUNNING", "COMPLETED", "TODAY", "FAILED", "TODAY", "WORKERS"]
    assert lines[-1].split()[0] == str(stats["queued"])


# --- credentials and errors ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["tasks"], ["submit", "j", "-e", "x", "--json"]], ids=" ".join)
def test_bad_key_is_one_line(cli: Cli, args: list[str]) -> None:
    line = assert_one_line_error(cli(args, "fml_not-a-real-key"), "UNAUTHORIZED", 1)
    assert "--api-key" in line  # says how to fix it


def test_missing_key_is_unauthorized(cli: Cli) -> None:
    assert_one_line_error(cli(["queue"]), "UNAUTHORIZED", 1)


def test_server_side_validation_error_is_one_line(cli: Cli, keys: Any) -> None:
    line = assert_one_line_error(cli(["tasks", "--status", "bogus"], keys.user), "BAD_REQUEST", 1)
    assert "status" in line


def test_worker_key_is_forbidden(cli: Cli, keys: Any) -> None:
    assert_one_line_error(cli(["tasks"], keys.worker), "FORBIDDEN", 1)


def test_config_file_supplies_server_and_key(
    shared_server: ServerHandle, keys: Any, config_file: Path
) -> None:
    env = cli_env(FETCHML_CONFIG=str(config_file))  # no server URL, no key in the environment
    assert "FETCHML_SERVER_URL" not in env and "FETCHML_API_KEY" not in env
    assert_ok(run(["config", "set", "server_url", shared_server.url], env))
    assert_ok(run(["config", "set", "api_key", keys.other], env))

    task = json.loads(assert_ok(run(["submit", "from-config", "-e", "x", "--json"], env)).stdout)
    assert task["user_id"] == "bob"  # the file's key was sent

    # Precedence: environment over file, flag over environment.
    env_bad = {**env, "FETCHML_API_KEY": "fml_wrong"}
    assert_one_line_error(run(["queue"], env_bad), "UNAUTHORIZED", 1)
    assert_ok(run(["queue", "--api-key", keys.other], env_bad))
    env_dead = {**env, "FETCHML_SERVER_URL": "http://127.0.0.1:9"}
    assert_one_line_error(run(["queue"], env_dead), "SERVER_UNREACHABLE", 1)
    assert_ok(run(["queue", "--server", shared_server.url], env_dead))


def test_keys_create_writes_where_the_server_reads(shared_server: ServerHandle) -> None:
    # `keys create` on the running server's database (its data dir, or its PostgreSQL URL):
    # the new key works at once.
    created = assert_ok(run(["keys", "create", "--user", "dave", *shared_server.db_cli_args()], cli_env()))
    key = created.stdout.splitlines()[-1]
    task = json.loads(
        assert_ok(run(["submit", "daves", "-e", "x", "--json"], cli_env(shared_server, key))).stdout
    )
    assert task["user_id"] == "dave"
