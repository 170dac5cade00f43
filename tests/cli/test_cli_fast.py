"""The fast path (fetchml/cli/fast.py): the stored --help texts and `fetchml tasks` without the
app must print exactly what the app prints, and hand every other case to the app."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from fetchml.cli import helpgen
from fetchml.client.config import config_file
from tests.backends import SQLITE
from tests.cli.conftest import assert_ok, assert_one_line_error, cli_env, run
from tests.cli.test_cli_tasks import Cli, submit_direct
from tests.harness import REPO, ServerHandle

APP = {"FETCHML_NO_FAST_PATH": "1"}  # the app renders everything


def test_the_stored_help_texts_are_current() -> None:
    assert helpgen.MODULE.read_text() == helpgen.module_text(), (
        "fetchml/cli/helptext.py is stale: run python -m fetchml.cli.docgen --write"
    )


@pytest.mark.parametrize("columns", ["80", "200"])
@pytest.mark.parametrize("path", [["tasks"], ["audit", "verify"], ["run"], ["jupyter"]], ids=" ".join)
def test_stored_help_is_the_apps_help(path: list[str], columns: str) -> None:
    fast = assert_ok(run([*path, "--help"], cli_env(COLUMNS=columns)))
    app = assert_ok(run([*path, "--help"], cli_env(COLUMNS=columns, **APP)))
    assert fast.stdout == app.stdout and fast.stdout.startswith(f"Usage: fetchml {' '.join(path)} ")


def test_a_narrow_terminal_or_an_unknown_command_goes_to_the_app() -> None:
    narrow = assert_ok(run(["tasks", "--help"], cli_env(COLUMNS="60")))
    assert narrow.stdout == assert_ok(run(["tasks", "--help"], cli_env(COLUMNS="60", **APP))).stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 58  # laid out for 60 columns
    unknown = run(["nosuch", "--help"], cli_env(COLUMNS="80"))
    assert unknown.returncode == 2 and "No such command 'nosuch'" in unknown.stderr


# --- fetchml tasks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> str:
    """The fast path is the client's business: SQLite only."""
    return SQLITE


def same(fast: str, app: str) -> bool:
    """Equal output; in JSON, priority_aged may have grown between the two requests."""
    if not fast.startswith("{"):
        return fast == app

    def steady(page: dict[str, Any]) -> dict[str, Any]:
        return {**page, "tasks": [{**t, "priority_aged": None} for t in page["tasks"]]}

    return steady(json.loads(fast)) == steady(json.loads(app)) and fast.count("\n") == app.count("\n")


@pytest.fixture(scope="module")
def listed(shared_server: ServerHandle, keys: Any) -> list[str]:
    """Tasks of every kind a row can show: long names, a pending reason, an error."""
    ids = [
        submit_direct(shared_server, keys.user, "a-rather-long-job-name-that-folds", priority=9),
        submit_direct(shared_server, keys.user, "short", priority=1),
    ]
    cancelled = submit_direct(shared_server, keys.user, "cancelled-one")
    with shared_server.client(keys.user) as c:
        c.tasks.cancel(cancelled)
    return [*ids, cancelled]


LINES = [
    [],
    ["--json"],
    ["--status", "failed"],
    ["-s", "queued", "-n", "1"],
    ["--limit=2", "--offset=1"],
    ["-n1", "--offset", "2", "--json"],
    ["--user", "alice", "--status=queued"],
    ["--user", "nobody"],
]


@pytest.mark.parametrize("args", LINES, ids=lambda a: " ".join(a) or "no options")
@pytest.mark.parametrize("columns", [None, "100", "200"])
def test_tasks_prints_what_the_app_prints(
    cli: Cli, listed: list[str], keys: Any, args: list[str], columns: str | None
) -> None:
    env = {"COLUMNS": columns} if columns else {}
    fast = assert_ok(cli(["tasks", *args], keys.user, **env))
    app = assert_ok(cli(["tasks", *args], keys.user, **env, **APP))
    assert same(fast.stdout, app.stdout), (fast.stdout, app.stdout)
    assert fast.stderr == app.stderr == ""
    if "--json" not in args and columns == "100":  # the long job name and the reason fold
        assert all(len(line) <= 100 for line in fast.stdout.splitlines()), fast.stdout
    if not args and columns is None:  # piped: one row per task, ids whole
        for task_id in listed:
            assert sum(line.startswith(task_id) for line in fast.stdout.splitlines()) == 1


def test_tasks_in_colour_only_when_asked(cli: Cli, listed: list[str], keys: Any) -> None:
    plain = assert_ok(cli(["tasks"], keys.user)).stdout
    assert "\x1b[" not in plain
    forced = assert_ok(cli(["tasks"], keys.user, FORCE_COLOR="1")).stdout
    assert "\x1b[1mID" in forced and "\x1b[31mfailed\x1b[0m" in forced
    assert forced == assert_ok(cli(["tasks"], keys.user, FORCE_COLOR="1", **APP)).stdout
    assert "\x1b[" not in assert_ok(cli(["tasks"], keys.user, FORCE_COLOR="1", NO_COLOR="1")).stdout
    assert "\x1b[" not in assert_ok(cli(["--no-color", "tasks"], keys.user, FORCE_COLOR="1")).stdout


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (["--limit", "0"], None, 2),  # out of range: the app's usage error
        (["--limit"], None, 2),
        (["--bogus"], None, 2),
        (["extra-argument"], None, 2),
        (["--status", "bogus"], "BAD_REQUEST", 1),  # the server's 400, reported by the app
    ],
)
def test_what_the_fast_path_does_not_take_the_app_reports(
    cli: Cli, keys: Any, args: list[str], code: str | None, exit_code: int
) -> None:
    fast = cli(["tasks", *args], keys.user)
    app = cli(["tasks", *args], keys.user, **APP)
    assert (fast.returncode, fast.stdout) == (app.returncode, app.stdout) and fast.returncode == exit_code
    if code:
        assert_one_line_error(fast, code, exit_code)
        # The trace id differs per request; the rest of the line is the same.
        assert fast.stderr.split(" (trace ")[0] == app.stderr.split(" (trace ")[0]
    else:
        assert fast.stderr == app.stderr


def test_a_bad_key_is_the_apps_error(cli: Cli) -> None:
    fast = assert_one_line_error(cli(["tasks"], "fml_not-a-key"), "UNAUTHORIZED", 1)
    assert "--api-key" in fast  # the app's hint: the fast path handed it over


def test_https_and_proxies_go_to_the_app(shared_server: ServerHandle, keys: Any, tmp_path: Path) -> None:
    # The probe prints whether typer was loaded: the app ran (and then failed to reach the server).
    probe = "import sys; from fetchml.cli.main import main; sys.argv = ['fetchml', 'tasks']\n"
    probe += "try:\n    main()\nexcept SystemExit:\n    pass\nprint('typer' in sys.modules)"
    port = shared_server.url.rsplit(":", 1)[1]
    for extra in ({"FETCHML_SERVER_URL": f"https://127.0.0.1:{port}"}, {"HTTP_PROXY": "http://127.0.0.1:1"}):
        env = cli_env(shared_server, keys.user, **extra)
        done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True)
        assert done.stdout.strip().splitlines()[-1] == "True", (extra, done.stdout, done.stderr)


class Silent:
    """A loopback server that accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        for _ in range(10):  # bounded: a test makes one or two connections
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("as_json", [False, True])
def test_a_timeout_is_reported_once_not_waited_out_twice(as_json: bool) -> None:
    silent = Silent()
    try:
        args = ["tasks", "--json"] if as_json else ["tasks"]
        result = run(args, cli_env(FETCHML_SERVER_URL=silent.url, FETCHML_API_KEY="k", FETCHML_TIMEOUT="0.5"))
        line = assert_one_line_error(result, "SERVER_TIMEOUT", 1)
        assert f"The fetchml server at {silent.url} accepted the connection but did not answer within 0.5s" in line
        assert "FETCHML_TIMEOUT" in line
        assert len(silent.accepted) == 1  # the app did not ask again
        if as_json:
            assert json.loads(result.stdout)["code"] == "SERVER_TIMEOUT"
    finally:
        silent.close()


def test_the_config_file_is_where_platformdirs_puts_it(tmp_path: Path) -> None:
    import platformdirs

    saved = {k: os.environ.pop(k, None) for k in ("FETCHML_CONFIG", "XDG_CONFIG_HOME")}
    try:
        for xdg in (None, str(tmp_path / "xdg")):
            if xdg:
                os.environ["XDG_CONFIG_HOME"] = xdg
            expected = Path(platformdirs.user_config_dir("fetchml", appauthor=False)) / "config.toml"
            assert Path(config_file()) == expected
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def test_the_fast_path_reads_the_config_file(shared_server: ServerHandle, keys: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'server_url = "{shared_server.url}"\napi_key = "{keys.user}"\n')
    cfg.chmod(0o600)
    env = cli_env(FETCHML_CONFIG=str(cfg))
    env.pop("FETCHML_SERVER_URL", None)
    fast = assert_ok(run(["tasks", "--json"], env))
    assert same(fast.stdout, assert_ok(run(["tasks", "--json"], {**env, **APP})).stdout)
    assert json.loads(fast.stdout)["total"] >= 0
