"""The documented exit codes (0 ok, 1 an error from or reaching the server, 2 an invalid command
line), errors as JSON on stdout under --json, and --no-color / NO_COLOR."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env, run, unreachable_url
from tests.harness import ServerHandle

Cli = Callable[..., Result]
# An SGR sequence that sets a foreground or background colour (bold and the like are not colour,
# and NO_COLOR leaves them: https://no-color.org).
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])[;m]")


def test_an_invalid_command_line_exits_2_and_sends_nothing() -> None:
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="k")
    assert run(["tasks", "--no-such-option"], env).returncode == 2
    assert run(["no-such-command"], env).returncode == 2
    # Caught before anything is sent (an unreachable server would be exit 1).
    bad_time = run(["submit", "j", "-e", "t.py", "--time", "soon"], env)
    assert bad_time.returncode == 2 and "invalid --time" in bad_time.stderr


def test_an_unreachable_server_exits_1_with_one_line() -> None:
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="k")
    assert_one_line_error(run(["tasks"], env), "SERVER_UNREACHABLE", 1)


def test_with_json_the_error_is_the_api_envelope_on_stdout(shared_server: ServerHandle) -> None:
    key = shared_server.make_key("exit-codes", "user")
    done = run(["status", "0" * 32, "--json"], cli_env(shared_server, key))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    body = json.loads(done.stdout)
    assert body["code"] == "NOT_FOUND" and body["error"] and body["trace_id"]
    assert done.stderr.startswith("error: NOT_FOUND: ")
    down = run(["tasks", "--json"], cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="k"))
    assert down.returncode == 1 and json.loads(down.stdout)["code"] == "SERVER_UNREACHABLE"
    usage = run(["submit", "j", "-e", "t.py", "--time", "soon", "--json"], cli_env(shared_server, key))
    assert usage.returncode == 2 and json.loads(usage.stdout)["code"] == "USAGE"


def test_no_color_is_accepted_anywhere_and_colours_nothing(shared_server: ServerHandle) -> None:
    key = shared_server.make_key("exit-codes-color", "user")
    env = cli_env(shared_server, key, FORCE_COLOR="1", TERM="xterm-256color")
    assert_ok(run(["submit", "colour", "-e", "t.py"], env))
    assert COLOUR.search(assert_ok(run(["tasks"], env)).stdout)  # a queued task's status is coloured
    for args in (["--no-color", "tasks"], ["tasks", "--no-color"], ["status", "--no-color", "x" * 32]):
        out = run(args, env)
        assert not COLOUR.search(out.stdout + out.stderr), out.stdout
    assert not COLOUR.search(assert_ok(run(["tasks"], {**env, "NO_COLOR": "1"})).stdout)
