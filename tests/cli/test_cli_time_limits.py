"""`--time DURATION` of submit, run and jupyter start: the parser, and what reaches the server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fetchml.cli.durations import format_minutes, parse_minutes
from tests.cli.conftest import TASK_ID_RE, Result, assert_ok, cli_env, run
from tests.harness import ServerHandle

Cli = Callable[..., Result]


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("45", 45),
        ("90m", 90),
        ("2h", 120),
        ("1h30m", 90),
        ("1d", 1440),
        ("1d12h", 2160),
        ("1d2h3m", 1563),
        (" 2H ", 120),
        ("1h 30m", 90),
        ("525600", 525_600),
    ],
)
def test_durations_parse_to_minutes(text: str, minutes: int) -> None:
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize(
    "text", ["", " ", "m", "1.5h", "30s", "1x", "h1", "30m2h", "1h1h", "-5", "5 minutes", "1:30", "0", "0h0m"]
)
def test_anything_else_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid --time .*(expected|at least one minute)"):
        parse_minutes(text)


@pytest.mark.parametrize(
    ("minutes", "text"), [(45, "45m"), (90, "1h30m"), (120, "2h"), (1440, "1d"), (2161, "1d12h1m")]
)
def test_minutes_format_back_the_way_time_takes_them(minutes: int, text: str) -> None:
    assert format_minutes(minutes) == text
    assert parse_minutes(text) == minutes


# --- the commands, on a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def cli(shared_server: ServerHandle) -> Cli:
    def call(args: list[str], key: str | None = None) -> Result:
        return run(args, cli_env(shared_server, key))

    return call


def test_submit_time_sends_minutes_and_status_shows_them(
    cli: Cli, shared_server: ServerHandle, keys: Any
) -> None:
    result = assert_ok(
        cli(["submit", "limited", "-e", "train.py", "--time", "1h30m", "--gpu", "64"], keys.user)
    )
    match = TASK_ID_RE.match(result.stdout.strip())
    assert match, result.stdout
    with shared_server.client(keys.user) as c:
        assert c.tasks.get(match[1]).time_limit_minutes == 90
    shown = assert_ok(cli(["status", match[1]], keys.user)).stdout
    assert "time limit" in shown and "1h30m" in shown, shown
    short = json.loads(
        assert_ok(cli(["submit", "short", "-e", "x.py", "-t", "45", "--json"], keys.user)).stdout
    )
    assert short["time_limit_minutes"] == 45
    with shared_server.client(keys.user) as c:
        c.tasks.cancel(match[1])
        c.tasks.cancel(short["id"])


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "bad", "-e", "train.py", "--time", "90 minutes"],
        ["run", "--no-embedded", "--time", "1.5h", "train.py"],
        ["jupyter", "start", "bad", "--time", "30s", "--no-wait"],
    ],
)
def test_a_bad_time_fails_before_anything_is_sent(cli: Cli, keys: Any, args: list[str]) -> None:
    result = cli(args, keys.user)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: invalid --time") and "90m, 2h, 1h30m" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_time_over_a_year_is_refused_naming_the_field(cli: Cli, keys: Any) -> None:
    result = cli(["submit", "long", "-e", "train.py", "--time", "366d"], keys.user)
    assert result.returncode == 2 and "time_limit_minutes" in result.stderr, result.stderr


def test_jupyter_start_time_sends_minutes(cli: Cli, shared_server: ServerHandle, keys: Any) -> None:
    out = assert_ok(
        cli(["jupyter", "start", "tl-nb", "--gpu", "64", "--time", "8h", "--no-wait", "--json"], keys.user)
    )
    svc = json.loads(out.stdout)
    assert svc["time_limit_minutes"] == 480
    shown = assert_ok(cli(["jupyter", "show", svc["id"]], keys.user)).stdout
    assert "time limit" in shown and "8h" in shown, shown
    assert_ok(cli(["jupyter", "stop", svc["id"]], keys.user))
