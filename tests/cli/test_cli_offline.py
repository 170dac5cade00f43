"""CLI behaviour that needs no server: help, import weight, config, local validation, keys."""

from __future__ import annotations

import ast
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import (
    HEX64,
    assert_ok,
    assert_one_line_error,
    cli_env,
    run,
    unreachable_url,
)
from tests.harness import REPO, run_cli

CLI_DIR = REPO / "fetchml" / "cli"
HEAVY = ("litestar", "sqlmodel", "sqlalchemy", "docker", "textual", "pynvml", "httpx", "pydantic", "rich")
COMMANDS = ("submit", "tasks", "status", "cancel", "queue", "experiments", "audit", "config", "keys", "serve")


def test_help_exits_0_and_lists_every_command() -> None:
    result = assert_ok(run(["--help"], cli_env()))
    for command in COMMANDS:
        assert f" {command} " in result.stdout, f"{command} missing from --help:\n{result.stdout}"


def test_import_loads_no_heavy_module() -> None:
    code = (
        "import json, sys, typer\n"
        "import fetchml.cli\n"
        "from fetchml.cli.main import COMMANDS, app\n"
        "group = typer.main.get_command(app)\n"  # building the command tree, as --help does
        # Commands load lazily (fetchml/cli/root.py): resolve each, as its own --help does.
        "ctx = typer.Context(group)\n"
        "for name in COMMANDS: group.get_command(ctx, name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = json.loads(out.stdout)
    assert "fetchml.cli.tasks" in loaded  # the probe did import the command modules
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not heavy, f"import fetchml.cli loaded {heavy}"
    layers = [
        m
        for m in loaded
        if m.startswith(("fetchml.client", "fetchml.server", "fetchml.store", "fetchml.services"))
    ]
    assert not layers, f"import fetchml.cli loaded {layers}"


def _imports(node: ast.AST) -> list[str]:
    names: list[str] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names.append(n.module)
    return names


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_cli_module_imports_follow_the_rules(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    for name in _imports(ast.Module(body=top, type_ignores=[])):
        root = name.split(".")[0]
        ok = (
            root in sys.stdlib_module_names
            or root in ("__future__", "typer")
            or name.startswith("fetchml.cli")
        )
        assert ok, f"{path.name} imports {name} at module level; import it inside the command"
    # These start the server or worker layers themselves (docs/architecture.md: serve, worker, keys; run
    # runs an embedded server when none answers, through embedded.py).
    if path.name not in ("serve.py", "keys.py", "worker.py", "run.py", "embedded.py"):
        for name in _imports(tree):
            assert not name.startswith(("fetchml.server", "fetchml.store", "fetchml.services")), (
                f"{path.name} imports {name}: the CLI reaches servers through fetchml.client"
            )


def test_every_command_and_option_has_help() -> None:
    import click
    import typer

    from fetchml.cli.main import app

    missing: list[str] = []

    def walk(cmd: click.Command, path: str, ctx: typer.Context) -> None:
        if not (cmd.help or cmd.short_help):
            missing.append(f"{path} (command)")
        for param in cmd.params:
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
        # Typer's groups are not click.Group (Typer 0.2x has a Click of its own), and the root
        # loads its commands on demand: walk by list_commands/get_command.
        for name in getattr(cmd, "list_commands", lambda _: [])(ctx):
            sub = cmd.get_command(ctx, name)
            walk(sub, f"{path} {name}", typer.Context(sub, parent=ctx, info_name=name))

    root = typer.main.get_command(app)
    walk(root, "fetchml", typer.Context(root, info_name="fetchml"))
    assert not missing, f"no help text: {missing}"


# --- --dataset / --meta parsing (pure functions) ----------------------------------------


def test_parse_dataset_accepts_the_documented_format() -> None:
    from fetchml.cli.tasks import parse_dataset

    assert parse_dataset(f"name=imagenet,source=/data/in.tar,sha256={HEX64}") == {
        "name": "imagenet",
        "source": "/data/in.tar",
        "sha256": HEX64,
    }
    # A comma inside a value (only a known field name after a comma starts a new field).
    spec = parse_dataset(f"source=https://h/x?a=1,b.tar,sha256={HEX64},name=d,mount_path=data/d")
    assert spec == {"source": "https://h/x?a=1,b.tar", "sha256": HEX64, "name": "d", "mount_path": "data/d"}


@pytest.mark.parametrize(
    "spec",
    [
        "imagenet",
        "name=x,source=y",  # no sha256
        f"name=x,source=y,sha256={HEX64},colour=red",
        f"name=x,name=y,source=y,sha256={HEX64}",
        f"name=,source=y,sha256={HEX64}",
    ],
)
def test_parse_dataset_rejects_malformed_specs(spec: str) -> None:
    from fetchml.cli.tasks import parse_dataset

    with pytest.raises(ValueError, match="invalid --dataset"):
        parse_dataset(spec)


def test_help_lists_match_the_enums() -> None:
    from fetchml.cli.audit import EVENT_TYPES
    from fetchml.cli.tasks import TASK_STATUSES
    from fetchml.core.enums import AuditEventType, TaskStatus

    assert set(EVENT_TYPES.split(", ")) == {t.value for t in AuditEventType}
    assert TASK_STATUSES.split(", ") == [s.value for s in TaskStatus]


def test_parse_meta() -> None:
    from fetchml.cli.tasks import parse_meta

    assert parse_meta(["team=vision", "note=a=b", "empty="]) == {"team": "vision", "note": "a=b", "empty": ""}
    for bad in (["novalue"], ["=x"], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="invalid --meta"):
            parse_meta(bad)


def test_malformed_dataset_is_one_line_exit_2_before_any_request() -> None:
    # The server URL is dead: exit 2 (not 1, SERVER_UNREACHABLE) proves nothing was sent.
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="fml_x")
    result = run(["submit", "job", "-e", "train.py", "--dataset", "name=x,source=y"], env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "error: invalid --dataset 'name=x,source=y'"
    )
    assert "sha256" in result.stderr


def test_value_rejected_by_the_model_is_one_line_exit_2() -> None:
    # Checked locally (exit 2, server never contacted); `bad name!` and --priority 11 are
    # covered against a live server in test_cli_tasks.py.
    env = cli_env(FETCHML_SERVER_URL=unreachable_url(), FETCHML_API_KEY="fml_x")
    bad_sha = ["submit", "ok", "-e", "x", "-d", "name=d,source=/d,sha256=xyz"]
    assert "sha256" in assert_one_line_error(run(bad_sha, env), "VALIDATION_ERROR", 2)


# --- unreachable server ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["tasks"], ["submit", "j", "-e", "x", "--json"], ["audit", "verify"]],
    ids=" ".join,
)
def test_unreachable_server_is_one_line(args: list[str]) -> None:
    url = unreachable_url()
    line = assert_one_line_error(
        run(args, cli_env(FETCHML_API_KEY="fml_x", FETCHML_SERVER_URL=url)), "SERVER_UNREACHABLE", 1
    )
    assert url in line


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--server", "localhost:9101"], "error: invalid server URL"),
        # A newline would otherwise die in the HTTP layer and pass for SERVER_UNREACHABLE.
        (["--server", "http://127.0.0.1:9", "--api-key", "fml_a\nb"], "error: invalid API key"),
    ],
)
def test_invalid_server_url_or_key_is_exit_2(flags: list[str], needle: str) -> None:
    result = run(["tasks", *flags], cli_env())
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith(needle) and result.stderr.count("\n") == 1


# --- config ---------------------------------------------------------------------------------


def test_config_round_trip(config_file: Path) -> None:
    env = cli_env(FETCHML_CONFIG=str(config_file))
    key = "fml_" + "k" * 43

    assert assert_ok(run(["config", "path"], env)).stdout.strip() == str(config_file)
    assert run(["config", "get", "server_url"], env).returncode == 1  # nothing set yet

    assert_ok(run(["config", "set", "server_url", "http://gpu-box:9101/"], env))
    assert_ok(run_cli(["config", "set", "api_key", "-"], env=env, input=key + "\n"))  # from stdin
    assert_ok(run(["config", "set", "timeout", "12.5"], env))
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600

    assert assert_ok(run(["config", "get", "server_url"], env)).stdout == "http://gpu-box:9101\n"
    assert assert_ok(run(["config", "get", "api_key"], env)).stdout == key + "\n"
    assert assert_ok(run(["config", "get", "timeout"], env)).stdout == "12.5\n"

    shown = assert_ok(run(["config", "show"], env)).stdout
    assert key[:12] + "…" in shown and key not in shown and key[:13] not in shown
    assert "http://gpu-box:9101" in shown and "file" in shown

    data = json.loads(assert_ok(run(["config", "show", "--json"], env)).stdout)
    assert data["path"] == str(config_file) and data["exists"] is True
    assert data["settings"]["api_key"] == {"value": key[:12] + "…", "source": "file"}
    assert data["settings"]["timeout"] == {"value": 12.5, "source": "file"}
    assert data["settings"]["server_url"]["source"] == "file"

    # The environment beats the file, and show says so.
    env_over = {**env, "FETCHML_SERVER_URL": "http://other:1"}
    data = json.loads(assert_ok(run(["config", "show", "--json"], env_over)).stdout)
    assert data["settings"]["server_url"] == {"value": "http://other:1", "source": "env"}

    assert "Unset api_key" in assert_ok(run(["config", "unset", "api_key"], env)).stdout
    missing = run(["config", "get", "api_key"], env)
    assert missing.returncode == 1 and "api_key is not set" in missing.stderr and missing.stdout == ""
    assert "was not set" in assert_ok(run(["config", "unset", "api_key"], env)).stdout
    data = json.loads(assert_ok(run(["config", "show", "--json"], env)).stdout)
    assert data["settings"]["api_key"] == {"value": None, "source": "default"}
    assert "api_key" not in config_file.read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["config", "set", "colour", "red"], "unknown config key 'colour'"),
        (["config", "get", "colour"], "unknown config key 'colour'"),
        (["config", "set", "timeout", "soon"], "invalid timeout"),
        (["config", "set", "timeout", "0"], "invalid timeout"),
        (["config", "set", "server_url", "gpu-box:9101"], "invalid server URL"),
        (["config", "set", "api_key", "fml_two words"], "invalid API key"),
    ],
)
def test_config_rejects_bad_input(config_file: Path, args: list[str], needle: str) -> None:
    result = run(args, cli_env(FETCHML_CONFIG=str(config_file)))
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith("error: ") and needle in result.stderr and result.stderr.count("\n") == 1
    assert not config_file.exists()


def test_broken_config_file_is_one_line(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("server_url = [unclosed\n")
    result = run(["tasks"], cli_env(FETCHML_CONFIG=str(config_file)))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and result.stderr.count("\n") == 1


# --- keys (straight on the database: no server needed) ---------------------------------------


@pytest.mark.slow
def test_keys_create_list_revoke_without_a_server(tmp_path: Path) -> None:
    env = cli_env()
    data = ["--data-dir", str(tmp_path / "data")]
    created = assert_ok(run(["keys", "create", "--user", "carol", "--role", "admin", *data], env))
    key = created.stdout.splitlines()[-1]
    assert key.startswith("fml_") and len(key) > 40
    assert "shown only now" in created.stderr

    listed = json.loads(assert_ok(run(["keys", "list", *data, "--json"], env)).stdout)
    assert [(k["user_id"], k["role"], k["prefix"]) for k in listed] == [("carol", "admin", key[:12])]
    assert key not in json.dumps(listed)
    key_id = listed[0]["id"]
    assert key_id in assert_ok(run(["keys", "list", *data], env)).stdout

    assert assert_ok(run(["keys", "revoke", key_id, *data], env)).stdout.startswith(f"Revoked {key_id}")
    assert "already revoked" in assert_one_line_error(
        run(["keys", "revoke", key_id, *data], env), "CONFLICT", 1
    )
    # list/revoke never create a database: a mistyped --data-dir is an error, not an empty list.
    typo = tmp_path / "dtaa"
    assert "no fetchml database" in assert_one_line_error(
        run(["keys", "list", "--data-dir", str(typo)], env), "NOT_FOUND", 1
    )
    assert not typo.exists()
    assert_one_line_error(
        run(["keys", "create", "--user", "x", "--role", "root", *data], env), "VALIDATION_ERROR", 2
    )
