"""Shell completion: the scripts, their installation, and values completed from a real server.

Completion is driven as the shells drive it: the real `fetchml` in a subprocess with the
completion variables set (`_FETCHML_COMPLETE`, and `COMP_WORDS`/`COMP_CWORD` for bash,
`_TYPER_COMPLETE_ARGS` for zsh and fish).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml.core.jupyter import StartJupyterRequest
from fetchml.core.models import CreateReservationRequest, CreateTaskRequest
from tests.backends import SQLITE
from tests.cli.conftest import Result, assert_ok, cli_env, run, unreachable_url
from tests.harness import ServerHandle, ServerPool, make_keys
from tests.protocol_kit import FakeWorker, unique


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One server for the module, on SQLite: the database is not the point here."""
    pool = ServerPool(SQLITE)
    try:
        yield pool.handle(tmp_path_factory.mktemp("srv"), {"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}).start()
    finally:
        pool.close()


def bash_complete(line: str, env: dict[str, str], instruction: str = "bash_complete") -> Result:
    """What bash gets for TAB at the end of `line` (a trailing space: a new, empty word)."""
    words = line.split(" ")
    env = {**env, "_FETCHML_COMPLETE": instruction, "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    return run([], env)


def completed(result: Result) -> list[str]:
    assert result.returncode == 0 and result.stderr == "", result
    return result.stdout.split()


# --- scripts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "needles"),
    [
        ("bash", ["_FETCHML_COMPLETE=complete_bash", "complete -o default -F _fetchml_completion fetchml"]),
        (
            "zsh",
            ["#compdef fetchml", "_FETCHML_COMPLETE=complete_zsh", "compdef _fetchml_completion fetchml"],
        ),
        ("fish", ["complete --command fetchml", "_FETCHML_COMPLETE=complete_fish"]),
    ],
)
def test_completion_prints_the_script(shell: str, needles: list[str], tmp_path: Path) -> None:
    script = assert_ok(run(["completion", shell], cli_env())).stdout
    for needle in needles:
        assert needle in script, script
    # The shell itself accepts it, where it is installed.
    exe = shutil.which(shell)
    if exe is not None:
        path = tmp_path / f"fetchml.{shell}"
        path.write_text(script)
        check = ["-n", str(path)] if shell != "fish" else ["--no-execute", str(path)]
        assert subprocess.run([exe, *check], capture_output=True, timeout=30).returncode == 0


def test_unknown_shell_is_a_usage_error() -> None:
    result = run(["completion", "tcsh"], cli_env())
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: unknown shell 'tcsh': expected one of bash, zsh, fish\n"


def test_install_completion(tmp_path: Path) -> None:
    """`fetchml completion bash --install` and `fetchml --install-completion` write into $HOME."""
    home = tmp_path / "home"
    env = cli_env(HOME=str(home), SHELL="/bin/bash")
    out = assert_ok(run(["completion", "bash", "--install"], env)).stdout
    installed = home / ".bash_completions" / "fetchml.sh"
    assert f"bash completion installed in {installed}" in out
    assert "_FETCHML_COMPLETE=complete_bash" in installed.read_text()
    assert f"source '{installed}'" in (home / ".bashrc").read_text()

    # The root option detects the shell this runs in (by the process tree, else $SHELL).
    out = assert_ok(run(["--install-completion"], cli_env(HOME=str(tmp_path / "home2"), SHELL="/bin/bash")))
    assert "completion installed in " + str(tmp_path / "home2") in out.stdout, out.stdout
    shown = assert_ok(run(["--show-completion"], env)).stdout
    assert "_FETCHML_COMPLETE=complete_" in shown


# --- completing from the server -----------------------------------------------------------------


def test_commands_complete_without_a_server() -> None:
    env = cli_env(FETCHML_SERVER_URL=unreachable_url())
    assert completed(bash_complete("fetchml sta", env)) == ["status"]
    assert completed(bash_complete("fetchml wor", env)) == ["worker", "workers"]
    assert completed(bash_complete("fetchml completion ", env)) == ["bash", "zsh", "fish"]
    assert "--install-completion" in completed(bash_complete("fetchml --in", env))


def test_task_ids_complete_from_the_server(srv: ServerHandle) -> None:
    key = srv.make_key(unique("u"), "user")
    with srv.client(key) as c:
        ids = [c.tasks.create(CreateTaskRequest(job_name=f"job{i}", entrypoint="x.py")).id for i in range(3)]
    env = cli_env(srv, key)
    # Bash as Click spells the instruction, and as Typer's scripts do.
    assert sorted(completed(bash_complete("fetchml status ", env))) == sorted(ids)
    assert sorted(completed(bash_complete("fetchml logs ", env, "complete_bash"))) == sorted(ids)
    assert completed(bash_complete(f"fetchml cancel {ids[1][:12]}", env)) == [ids[1]]
    assert completed(bash_complete("fetchml status zzz", env)) == []
    # --server on the line wins over the environment.
    elsewhere = cli_env(key=key, FETCHML_SERVER_URL=unreachable_url())
    assert sorted(completed(bash_complete(f"fetchml status --server {srv.url} ", elsewhere))) == sorted(ids)
    # zsh and fish, with the job and status as help.
    zsh = assert_ok(
        run(
            [],
            {**env, "_FETCHML_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": f"fetchml status {ids[0]}"},
        )
    ).stdout
    assert f'"{ids[0]}":"job0 (queued)"' in zsh
    fish_env = {
        **env,
        "_FETCHML_COMPLETE": "complete_fish",
        "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        "_TYPER_COMPLETE_ARGS": "fetchml artifacts ",
    }
    assert f"{ids[2]}\tjob2 (queued)" in assert_ok(run([], fish_env)).stdout


def test_workers_reservations_plugins_and_services_complete(srv: ServerHandle) -> None:
    keys = make_keys(srv)
    gpu_type = unique("G")
    worker = FakeWorker(srv, keys.worker)
    try:
        worker.register(gpus=[0], gpu_type=gpu_type)
        with srv.client(keys.admin) as c:
            reservation = c.reservations.create(CreateReservationRequest(gpu_count=1, gpu_type=gpu_type))
            service = c.jupyter.start(StartJupyterRequest(name="nb", gpu=1, gpu_type="NOSUCHGPU"))
    finally:
        worker.close()
    admin = cli_env(srv, keys.admin)
    assert worker.name in completed(bash_complete("fetchml workers show ", admin))
    assert completed(bash_complete(f"fetchml workers drain {worker.name[:6]}", admin)) == [worker.name]
    assert reservation.id in completed(bash_complete("fetchml submit j -e x --reservation ", admin))
    assert service.id in completed(bash_complete("fetchml jupyter stop ", admin))
    plugins = ["mlflow", "tensorboard", "wandb"]
    assert completed(bash_complete("fetchml plugins show ", admin)) == plugins
    assert completed(bash_complete("fetchml submit j -e x --plugin t", admin)) == ["tensorboard"]
    # A name that is no plugin's is left alone (`jupyter start NAME` is a new service's name).
    assert completed(bash_complete("fetchml jupyter start ", admin)) == []
    # A user key may not list workers: nothing, silently.
    assert completed(bash_complete("fetchml workers show ", cli_env(srv, keys.user))) == []


@pytest.mark.parametrize("case", ["unreachable", "bad key", "bad config"])
def test_failures_complete_nothing_silently(srv: ServerHandle, case: str, tmp_path: Path) -> None:
    env = {
        "unreachable": cli_env(key="fml_x", FETCHML_SERVER_URL=unreachable_url()),
        "bad key": cli_env(srv, "fml_not_a_key"),
        "bad config": cli_env(FETCHML_SERVER_URL="gpu-box:9101"),
    }[case]
    assert completed(bash_complete("fetchml status ", env)) == []


def test_a_silent_server_costs_at_most_about_a_second() -> None:
    """A server that takes the connection and never answers: completion gives up after its 1 s
    deadline, not the client's 30 s timeout (the bound is loose: the suite shares 2 cores)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # The same command without completion, to subtract the interpreter's start-up.
        start = time.monotonic()
        assert_ok(run(["status", "--help"], cli_env()))
        startup = time.monotonic() - start
        start = time.monotonic()
        assert completed(bash_complete("fetchml status ", cli_env(key="fml_x", FETCHML_SERVER_URL=url))) == []
        assert time.monotonic() - start - startup < 8
