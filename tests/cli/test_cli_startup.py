"""Start-up cost: what `fetchml --help`, a command's --help and a client command load, and the
command table (fetchml/cli/main.py) that keeps them light, checked against the commands themselves.

bench/cli.py measures the time; these tests keep the reasons it is short from coming undone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fetchml.cli.main import COMMANDS
from tests.backends import SQLITE
from tests.cli.conftest import assert_ok, cli_env, run
from tests.harness import REPO, ServerHandle, ServerPool

# `--help` must not load these again (each costs tens of milliseconds; rich.table comes with
# Typer's Rich help and httpx's own command line).
NOT_FOR_HELP = ("httpx", "pydantic", "pydantic_core", "rich.table")
PROBE = """
import atexit, json, sys
out = sys.argv[1]
def dump():
    with open(out, "w") as fh:
        json.dump(sorted(sys.modules), fh)
atexit.register(dump)
sys.argv = ["fetchml", *sys.argv[2:]]
from fetchml.cli.main import main
main()
"""


def loaded_by(args: list[str], env: dict[str, str], tmp_path: Path) -> set[str]:
    """The modules `fetchml ARGS` has loaded when it exits (the real entry point, in a subprocess)."""
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(out.read_text()))


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in names or m.split(".")[0] in names)


def test_top_level_help_loads_not_even_typer(tmp_path: Path) -> None:
    modules = loaded_by(["--help"], cli_env(), tmp_path)
    assert not heavy(modules, (*NOT_FOR_HELP, "typer", "rich", "click"))
    assert not [
        m for m in modules if m.startswith("fetchml.") and m not in ("fetchml.cli", "fetchml.cli.main")
    ]


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (["tasks", "--help"], "fetchml.cli.tasks"),
        (["audit", "events", "--help"], "fetchml.cli.audit"),
        (["jupyter", "start", "--help"], "fetchml.cli.jupyter"),
        (["doctor", "--help"], "fetchml.cli.doctor"),
        (["completion", "--help"], "fetchml.cli.completion"),
        (["version"], "fetchml.cli.root"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_a_commands_help_loads_that_command_only(args: list[str], module: str, tmp_path: Path) -> None:
    # 60 columns: the app lays the help out (the stored 80-column copy is tests/cli/test_cli_fast.py's).
    modules = loaded_by(args, cli_env(COLUMNS="60"), tmp_path)
    assert not heavy(modules, NOT_FOR_HELP), heavy(modules, NOT_FOR_HELP)
    assert module in modules
    # root: the app; completion: attaches completers to every command loaded.
    others = {e.target.split(":")[0] for e in COMMANDS.values()} - {
        module,
        "fetchml.cli.root",
        "fetchml.cli.completion",
    }
    assert not others & modules, f"{args} loaded other commands: {sorted(others & modules)}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    pool = ServerPool(SQLITE)
    try:
        yield pool.handle(tmp_path_factory.mktemp("srv"), {}).start()
    finally:
        pool.close()


def test_a_commands_help_on_a_wide_terminal_loads_no_typer(tmp_path: Path) -> None:
    for args in (["tasks", "--help"], ["audit", "events", "--help"]):
        modules = loaded_by(args, cli_env(COLUMNS="120"), tmp_path)
        assert "fetchml.cli.helptext" in modules
        assert not heavy(modules, (*NOT_FOR_HELP, "typer", "rich", "click")), args
        assert not [m for m in modules if m.startswith("fetchml.") and m.count(".") > 1 and "cli" not in m]


def test_listing_tasks_loads_no_typer_httpx_pydantic_or_rich(srv: ServerHandle, tmp_path: Path) -> None:
    modules = loaded_by(["tasks"], cli_env(srv, srv.make_key("alice", "user")), tmp_path)
    assert "fetchml.cli.tasklist" in modules  # the fast path listed them
    # httpx._main is fetchml.client's stand-in (an empty module), not httpx.
    loaded = heavy(modules - {"httpx._main"}, ("typer", "click", "httpx", "pydantic", "pydantic_core", "rich", "http"))
    assert not loaded, loaded


def test_listing_tasks_loads_only_what_it_needs(srv: ServerHandle, tmp_path: Path) -> None:
    """The app's own `tasks` (the fast path off, as for any line it does not take)."""
    env = cli_env(srv, srv.make_key("alice", "user"), FETCHML_NO_FAST_PATH="1")
    modules = loaded_by(["tasks"], env, tmp_path)
    assert "fetchml.client.tasks" in modules  # the probe did list tasks
    # Other domains' clients and models, and httpx's own command line (click, rich.progress).
    unneeded = (
        "fetchml.client.artifacts",
        "fetchml.client.audit",
        "fetchml.core.audit",
        "click",
        "rich.progress",
    )
    assert not heavy(modules, unneeded), heavy(modules, unneeded)


# --- the table is the truth about the commands ---------------------------------------------------


def _root() -> Any:
    from fetchml.cli.root import app

    return typer.main.get_command(app)


def test_the_table_lists_every_command_with_its_own_help() -> None:
    root = _root()
    ctx = typer.Context(root, info_name="fetchml")
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        assert command is not None, name
        assert entry.help == command.get_short_help_str(10_000), (
            f"{name}: update its help in fetchml/cli/main.py"
        )
        assert (command.context_settings or {}) == (entry.context_settings or {}), name


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_fast_help_is_the_apps_help(columns: str) -> None:
    """`fetchml --help` is printed without typer; it must be what the app itself prints."""
    env = cli_env(COLUMNS=columns)
    fast = assert_ok(run(["--help"], env)).stdout
    code = "from fetchml.cli.root import app; app(['--help'], prog_name='fetchml')"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert fast == proc.stdout
    for name in COMMANDS:
        assert f"\n  {name} " in fast


def test_every_command_and_subcommand_has_working_help() -> None:
    """Resolved through the lazy table, every command's --help renders (in process: fast)."""
    runner = CliRunner()
    from fetchml.cli.root import app

    root = _root()
    ctx = typer.Context(root, info_name="fetchml")
    paths = []
    for name in COMMANDS:
        command = root.get_command(ctx, name)
        paths.append([name])
        sub_ctx = typer.Context(command, parent=ctx, info_name=name)
        paths += [[name, sub] for sub in getattr(command, "list_commands", lambda _: [])(sub_ctx)]
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], prog_name="fetchml")
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: fetchml {' '.join(path)} "), result.output


def test_a_mistyped_command_gets_suggestions() -> None:
    result = run(["taks"], cli_env())
    assert result.returncode == 2 and result.stdout == ""
    assert "No such command 'taks'. Did you mean 'tasks'" in result.stderr
