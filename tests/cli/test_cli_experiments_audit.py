"""experiments and audit commands on a real server; tampering and rate limits on their own server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env, run
from tests.harness import ServerHandle

Cli = Callable[..., Result]


def test_experiments_create_and_list(cli: Cli, keys: Any) -> None:
    out = assert_ok(
        cli(["experiments", "create", "baseline", "-D", "first try [b]x[/b]", "-c", "abc123"], keys.user)
    )
    match = re.fullmatch(r"Created experiment baseline \(([0-9a-f]{32})\)\n", out.stdout)
    assert match, out.stdout
    created = json.loads(
        assert_ok(cli(["experiments", "create", "sweep", "--description", "lr", "--json"], keys.user)).stdout
    )
    assert (created["name"], created["description"], created["status"], created["user_id"]) == (
        "sweep",
        "lr",
        "active",
        "alice",
    )

    listed = json.loads(assert_ok(cli(["experiments", "list", "--json"], keys.other)).stdout)
    by_name = {e["name"]: e for e in listed}
    assert by_name["baseline"]["id"] == match[1] and by_name["baseline"]["commit_id"] == "abc123"
    assert [e["name"] for e in listed][:2] == ["sweep", "baseline"]  # newest first

    table = assert_ok(cli(["experiments", "list"], keys.user)).stdout
    row = next(line for line in table.splitlines() if line.startswith(match[1]))
    assert "baseline" in row and "abc123" in row and "first try [b]x[/b]" in row
    assert f"{len(listed)} experiments" in table


def test_duplicate_experiment_is_conflict(cli: Cli, keys: Any) -> None:
    assert_ok(cli(["experiments", "create", "dup"], keys.user))
    line = assert_one_line_error(cli(["experiments", "create", "dup"], keys.other), "CONFLICT", 1)
    assert "dup" in line
    assert_one_line_error(cli(["experiments", "create", "dup", "--json"], keys.user), "CONFLICT", 1)


@pytest.mark.parametrize(
    "args", [["audit", "events"], ["audit", "verify"], ["audit", "root", "--json"]], ids=" ".join
)
def test_audit_needs_admin(cli: Cli, keys: Any, args: list[str]) -> None:
    assert_one_line_error(cli(args, keys.user), "FORBIDDEN", 1)


def test_audit_events_as_admin(cli: Cli, keys: Any) -> None:
    assert_ok(cli(["experiments", "create", "audited"], keys.other))

    page = json.loads(
        assert_ok(cli(["audit", "events", "--type", "experiment_created", "--json"], keys.admin)).stdout
    )
    assert set(page) == {"events", "total", "limit", "offset"}
    assert page["events"] and {e["event_type"] for e in page["events"]} == {"experiment_created"}
    newest = page["events"][0]
    assert (newest["user_id"], newest["metadata"]) == ("bob", {"name": "audited"})

    by_bob = json.loads(assert_ok(cli(["audit", "events", "--user", "bob", "--json"], keys.admin)).stdout)
    assert by_bob["total"] >= 1 and {e["user_id"] for e in by_bob["events"]} == {"bob"}

    future = json.loads(
        assert_ok(cli(["audit", "events", "--from", "2999-01-01", "--json"], keys.admin)).stdout
    )
    assert future["total"] == 0 and future["events"] == []
    window = [
        "audit",
        "events",
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2999-01-01",
        "--limit",
        "1",
        "--json",
    ]
    assert json.loads(assert_ok(cli(window, keys.admin)).stdout)["total"] >= 1

    table = assert_ok(
        cli(["audit", "events", "--type", "experiment_created", "--limit", "1"], keys.admin)
    ).stdout
    for header in ("SEQ", "TIME", "TYPE", "USER", "RESOURCE", "ACTION", "OK"):
        assert header in table
    assert newest["resource"] in table and "yes" in table
    assert re.search(r"1 of \d+ events", table)


def test_audit_events_bad_input(cli: Cli, keys: Any) -> None:
    result = cli(["audit", "events", "--from", "last tuesday"], keys.admin)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: invalid --from 'last tuesday'") and result.stderr.count("\n") == 1
    assert "event_type" in assert_one_line_error(
        cli(["audit", "events", "--type", "bogus"], keys.admin), "BAD_REQUEST", 1
    )


def test_audit_verify_and_root(cli: Cli, keys: Any) -> None:
    result = assert_ok(cli(["audit", "verify"], keys.admin))
    assert re.fullmatch(r"Audit chain valid: \d+ events, root [0-9a-f]{64}\n", result.stdout), result.stdout
    verified = json.loads(assert_ok(cli(["audit", "verify", "--json"], keys.admin)).stdout)
    assert verified["valid"] is True and "first_tampered" not in verified  # absent, not null

    root = json.loads(assert_ok(cli(["audit", "root", "--json"], keys.admin)).stdout)
    newest = json.loads(assert_ok(cli(["audit", "events", "--limit", "1", "--json"], keys.admin)).stdout)[
        "events"
    ][0]
    assert root["root_hash"] == newest["event_hash"] and root["total_events"] == newest["sequence_num"]

    lines = assert_ok(cli(["audit", "root"], keys.admin)).stdout.splitlines()
    assert lines[0] == root["root_hash"] and lines[1].startswith(f"{root['total_events']} events; last at ")


# --- a server of our own: tampered chain, tight rate limit -------------------------------------


@pytest.fixture(scope="module")
def strict_server(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="2")


def test_tampered_chain_fails_verify(strict_server: ServerHandle, tmp_path: Path) -> None:
    human_key = strict_server.make_key("auditor1", "admin")
    json_key = strict_server.make_key("auditor2", "admin")  # own bucket: 2 requests a minute each
    strict_server.db_exec("UPDATE audit_events SET action = 'forged' WHERE sequence_num = 1")

    result = run(["audit", "verify"], cli_env(strict_server, human_key))
    assert result.returncode == 1, result
    assert "Audit chain INVALID: first tampered event is #1" in result.stdout
    assert "Traceback" not in result.stderr

    result = run(["audit", "verify", "--json"], cli_env(strict_server, json_key))
    assert result.returncode == 1
    verified = json.loads(result.stdout)
    assert (verified["valid"], verified["first_tampered"]) == (False, 1)


def test_rate_limit_is_one_line(strict_server: ServerHandle) -> None:
    env = cli_env(strict_server, strict_server.make_key("hasty", "user"))
    for _ in range(2):
        assert_ok(run(["queue", "--json"], env))
    line = assert_one_line_error(run(["queue", "--json"], env), "RATE_LIMITED", 1)
    assert re.search(r"retry in \d+s", line), line
