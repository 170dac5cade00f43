"""CLI test helpers: the real `fetchml` as a subprocess, against real servers."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ServerHandle, base_env, free_port, run_cli

Result = subprocess.CompletedProcess[str]


def cli_env(server: ServerHandle | None = None, key: str | None = None, **extra: str) -> dict[str, str]:
    """Env for one CLI run: no inherited FETCHML_*, the server's URL and the key (if given).

    FETCHML_CONFIG always points somewhere harmless, never at the developer's real config.
    """
    env = server.env() if server is not None else base_env()
    env.setdefault("FETCHML_CONFIG", "/nonexistent/fetchml-test-config.toml")
    if server is not None:
        env["FETCHML_SERVER_URL"] = server.url
    if key is not None:
        env["FETCHML_API_KEY"] = key
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], input: str | None = None) -> Result:
    return run_cli(args, env=env, input=input)


def assert_ok(result: Result) -> Result:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_one_line_error(result: Result, code: str, exit_code: int | None = None) -> str:
    """Non-zero exit, exactly one `error: CODE: ...` line on stderr, and on stdout nothing, or
    (a command run with --json) the error as one JSON envelope with the same code."""
    assert result.returncode != 0, f"expected failure, got 0:\n{result.stdout}"
    if exit_code is not None:
        assert result.returncode == exit_code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    if "--json" in result.args:
        envelope = json.loads(result.stdout)
        assert envelope["code"] == code and envelope["error"], envelope
        assert result.stdout.count("\n") == 1, result.stdout
    else:
        assert result.stdout == "", f"stdout should be empty on error: {result.stdout!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    return lines[0]


def unreachable_url() -> str:
    """A loopback URL with (almost certainly) nothing listening."""
    return f"http://127.0.0.1:{free_port()}"


HEX64 = "ab" * 32
TASK_ID_RE = re.compile(r"^Queued task ([0-9a-f]{32}) \((?P<job>[\w-]+), priority (?P<prio>\d+)\)$")


@pytest.fixture(scope="module")
def cli(shared_server: ServerHandle) -> Callable[..., Result]:
    """`cli(args, key=..., **env)`: run fetchml against the module's shared server."""

    def call(args: list[str], key: str | None = None, **env: Any) -> Result:
        return run(args, cli_env(shared_server, key, **env))

    return call


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "config.toml"
