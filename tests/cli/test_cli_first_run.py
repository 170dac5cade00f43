"""The first run of a new user, as real processes on a fresh HOME: `fetchml serve` on loopback
makes an admin key and writes it to the client config, so `fetchml tasks` works with no other
step; `fetchml run` brings the artifacts back into ./fetchml-runs/<id>/; the history of an
embedded `fetchml run` shows through a later `fetchml serve`; a shared host gets no key."""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fetchml.cli.embedded import local_user_name
from fetchml.client import FetchmlClient
from fetchml.client.artifacts import safe_destination
from fetchml.services.checkpoints import load_or_create_key
from fetchml.services.keys import first_admin_key_op
from fetchml.services.principal import LOCAL_OPERATOR
from fetchml.services.write_queue import run_write
from fetchml.store.db import Database
from tests.backends import POSTGRESQL, create_database, drop_database
from tests.cli.conftest import assert_ok, assert_one_line_error
from tests.harness import ServerHandle, base_env, die_with_parent, free_port

Result = subprocess.CompletedProcess[str]
TASK_QUEUED = re.compile(r"task ([0-9a-f]{32}) queued")

# A task that leaves artifacts in nested folders, and fails with --exit N after writing them.
TRAIN = """\
import os, sys
from pathlib import Path
out = Path(os.environ["FETCHML_OUTPUT_DIR"])
(out / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
(out / "model.json").write_text('{"w": 3}')
(out / "sub" / "deeper" / "curve.csv").write_text("epoch,loss\\n1,0.5\\n")
print("trained", flush=True)
sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0)
"""


@dataclass
class Machine:
    """One user's account on a fresh machine: its own HOME, so its own client config file and
    default data dir (no FETCHML_* and no XDG_* from the developer's environment)."""

    root: Path
    database_url: str | None = None
    servers: list[ServerHandle] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config(self) -> Path:
        return self.home / ".config" / "fetchml" / "config.toml"

    @property
    def data_dir(self) -> Path:
        return self.home / ".local" / "share" / "fetchml"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in base_env().items() if not k.startswith("XDG_")}
        env["HOME"] = str(self.home)
        if self.database_url:
            env["FETCHML_DATABASE_URL"] = self.database_url
        env.update(extra)
        return env

    def serve(self, *args: str, host: str = "127.0.0.1", worker: bool = False, **env: str) -> ServerHandle:
        """`fetchml serve --host HOST --port P` with nothing else (no --data-dir: the default)."""
        self.home.mkdir(parents=True, exist_ok=True)
        handle = ServerHandle(data_dir=self.data_dir, database_url=self.database_url)
        handle.log_path = self.root / f"serve-{handle.port}.log"
        cmd = [sys.executable, "-m", "fetchml", "serve", "--host", host, "--port", str(handle.port), *args]
        if not worker:
            cmd.append("--no-worker")
        handle.proc = subprocess.Popen(
            cmd,
            env=self.env(**env),
            stdout=handle.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.root,
            preexec_fn=die_with_parent,
        )
        self.servers.append(handle)
        return handle

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 60, **env: str) -> Result:
        return subprocess.run(
            [sys.executable, "-m", "fetchml", *args],
            env=self.env(**env),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def config_data(self) -> dict[str, Any]:
        with self.config.open("rb") as fh:
            return tomllib.load(fh)

    def api_keys(self) -> list[dict[str, Any]]:
        where = (
            ["--database-url", self.database_url] if self.database_url else ["--data-dir", str(self.data_dir)]
        )
        listed: list[dict[str, Any]] = json.loads(
            assert_ok(self.cli("keys", "list", "--json", *where)).stdout
        )
        return listed

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers.clear()


@pytest.fixture
def machine(backend: str, tmp_path: Path) -> Iterator[Machine]:
    """A fresh machine on each database backend (SQLite in the default data dir, or a fresh
    PostgreSQL database named by FETCHML_DATABASE_URL)."""
    url = create_database() if backend == POSTGRESQL else None
    m = Machine(tmp_path, database_url=url)
    try:
        yield m
    finally:
        m.stop()
        if url is not None:
            drop_database(url)


@pytest.fixture
def sqlite_machine(tmp_path: Path) -> Iterator[Machine]:
    """For what the database does not change: runs once, on SQLite."""
    m = Machine(tmp_path)
    try:
        yield m
    finally:
        m.stop()


def _serve_log_without_key(srv: ServerHandle, key: str) -> str:
    log = srv.log()
    assert key not in log, "the key itself must never reach the log"
    return log


# -- fetchml serve on loopback: the first-run key ------------------------------------------------


def test_first_serve_on_loopback_makes_an_admin_key_so_tasks_works_at_once(machine: Machine) -> None:
    srv = machine.serve().wait_ready()
    # The client config: made by the server, 0600, an admin key and this server's URL.
    mode = stat.S_IMODE(machine.config.stat().st_mode)
    assert mode == 0o600, oct(mode)
    cfg = machine.config_data()
    assert cfg["server_url"] == srv.url
    assert cfg["api_key"].startswith("fml_")
    # One line says so, with the file's path and never the key.
    log = _serve_log_without_key(srv, cfg["api_key"])
    said = [line for line in log.splitlines() if "first run" in line]
    assert len(said) == 1 and str(machine.config) in said[0] and " INFO " in said[0], log

    # No further step: the next command finds the server and the key on its own.
    tasks = assert_ok(machine.cli("tasks"))
    assert "0 of 0 tasks" in tasks.stdout
    status = assert_ok(machine.cli("scheduler", "status", "--json"))  # an admin-only route
    assert json.loads(status.stdout)

    (key,) = machine.api_keys()
    assert key["role"] == "admin" and key["user_id"] == local_user_name()
    assert cfg["api_key"].startswith(key["prefix"])
    # Audited like any key creation: who, which key, and why no one asked.
    rows = srv.db_exec(
        "SELECT user_id, resource, metadata FROM audit_events WHERE event_type = 'key_created'"
    )
    assert len(rows) == 1, rows
    actor, resource, meta = rows[0]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert actor == LOCAL_OPERATOR.user_id and resource == f"key:{key['id']}"
    assert meta["role"] == "admin" and meta["key_user"] == local_user_name() and "first run" in meta["reason"]
    assert_ok(machine.cli("audit", "verify"))

    # alembic's plugin and context lines are gone; our own line says what the schema did.
    assert "alembic" not in log, log
    assert "database schema created at" in log

    # A second start on the same database makes no other key and leaves the config alone.
    before = machine.config.read_bytes()
    machine.stop()
    again = machine.serve().wait_ready()
    assert [k["id"] for k in machine.api_keys()] == [key["id"]]
    assert machine.config.read_bytes() == before
    assert "first run" not in again.log() and "no API key" not in again.log()
    assert "database schema" not in again.log()  # nothing to upgrade


def test_a_key_already_in_the_config_is_kept(machine: Machine) -> None:
    machine.config.parent.mkdir(parents=True)
    machine.config.write_text('server_url = "http://127.0.0.1:9"\napi_key = "fml_mine"\n')
    machine.config.chmod(0o600)
    before = machine.config.read_bytes()
    srv = machine.serve().wait_ready()
    assert machine.config.read_bytes() == before
    assert machine.api_keys() == []  # a key nobody would hold is not made either
    log = srv.log()
    assert "already holds an api_key" in log and "fetchml keys create --user NAME --role admin" in log, log


def test_servers_starting_together_make_one_key(machine: Machine) -> None:
    # The schema and the audit signing key first, so that the servers race on the API key only
    # (the migration race has its own tests).
    db = Database(machine.database_url or f"sqlite:///{machine.data_dir / 'fetchml.db'}")
    try:
        db.migrate()
    finally:
        db.dispose()
    load_or_create_key(machine.data_dir / "audit-signing-key.pem")
    servers = [machine.serve(), machine.serve(), machine.serve()]
    for s in servers:
        s.wait_ready()
    (key,) = machine.api_keys()
    made = [s for s in servers if "first run: created admin key" in s.log()]
    assert len(made) == 1, [s.log() for s in servers]
    # The one key in the config works on every one of them.
    for s in servers:
        assert_ok(machine.cli("tasks", "--server", s.url))
    assert machine.config_data()["api_key"].startswith(key["prefix"])


def test_first_admin_key_op_under_concurrent_writers(machine: Machine) -> None:
    """The emptiness check and the insert share one write transaction: eight writers at once on
    fresh connections make exactly one key."""
    url = machine.database_url or f"sqlite:///{machine.root / 'race.db'}"
    setup = Database(url)
    setup.migrate()
    setup.dispose()
    results: list[object] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        db = Database(url)
        try:
            barrier.wait(10)
            results.append(run_write(db, first_admin_key_op("alice", LOCAL_OPERATOR)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 8 and sum(r is not None for r in results) == 1, results


def test_a_config_file_that_cannot_be_written_leaves_no_key(sqlite_machine: Machine) -> None:
    m = sqlite_machine
    # A folder where the config's temporary file goes: the write fails (even for root), the read
    # before it finds no file.
    obstacle = m.config.with_suffix(".tmp")
    obstacle.mkdir(parents=True)
    srv = m.serve().wait_ready()
    assert m.api_keys() == [], "a key nobody holds must not be left in the database"
    assert not m.config.exists()
    assert "could not be written" in srv.log() and "fetchml keys create" in srv.log(), srv.log()
    # The next start, with the file writable, makes the key.
    m.stop()
    obstacle.rmdir()
    m.serve().wait_ready()
    (key,) = m.api_keys()
    assert m.config_data()["api_key"].startswith(key["prefix"])
    assert_ok(m.cli("tasks"))


def test_a_shared_host_makes_no_key_and_says_how_to_make_one(machine: Machine) -> None:
    # Bound to every interface; the test talks to it on loopback only.
    srv = machine.serve(host="0.0.0.0").wait_ready()
    assert not machine.config.exists()
    assert machine.api_keys() == []
    (hint,) = [line for line in srv.log().splitlines() if "no API key exists yet" in line]
    assert " WARNING " in hint and "0.0.0.0" in hint
    command = re.search(r"`(fetchml keys create [^`]+)`", hint)
    assert command is not None, hint
    # The printed command is the real one: it makes a key this server accepts.
    argv = shlex.split(command.group(1).replace("NAME", "ops"))[1:]
    if machine.database_url:
        argv[argv.index("URL")] = machine.database_url
    made = assert_ok(machine.cli(*argv))
    key = made.stdout.strip().splitlines()[-1]
    listed = assert_ok(machine.cli("tasks", "--server", srv.url, "--api-key", key))
    assert "0 of 0 tasks" in listed.stdout


def test_loopback_with_the_first_run_key_turned_off_only_says_how(sqlite_machine: Machine) -> None:
    srv = sqlite_machine.serve(FETCHML_LOCAL_ADMIN_KEY="false").wait_ready()
    assert not sqlite_machine.config.exists() and sqlite_machine.api_keys() == []
    assert "FETCHML_LOCAL_ADMIN_KEY is off" in srv.log()


# -- fetchml run brings the artifacts back -----------------------------------------------------


def _project(m: Machine) -> Path:
    proj = m.root / "proj"
    proj.mkdir()
    (proj / "train.py").write_text(TRAIN)
    return proj


def _task_id(result: Result) -> str:
    found = TASK_QUEUED.search(result.stderr)
    assert found, result.stderr
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fetchml_run_brings_the_artifacts_back(sqlite_machine: Machine) -> None:
    m = sqlite_machine
    m.serve(worker=True).wait_ready()
    proj = _project(m)

    first = assert_ok(m.cli("run", "train.py", cwd=proj, timeout=120))
    tid = _task_id(first)
    assert "trained" in first.stdout
    runs = proj / "fetchml-runs" / tid
    assert (runs / "model.json").read_text() == '{"w": 3}'
    assert (runs / "sub" / "deeper" / "curve.csv").read_text().startswith("epoch,loss")
    assert "2 artifacts" in first.stderr and f"in fetchml-runs/{tid}/" in first.stderr, first.stderr

    # The next snapshot leaves fetchml-runs/ out: the same code is the same snapshot.
    skipped = assert_ok(m.cli("run", "--no-download", "train.py", cwd=proj, timeout=120))
    assert "already on the server" in skipped.stderr, skipped.stderr
    assert sorted(p.name for p in (proj / "fetchml-runs").iterdir()) == [tid]
    assert "artifact" not in skipped.stderr

    out = proj / "elsewhere" / "out"
    other = assert_ok(m.cli("run", "--output", str(out), "train.py", cwd=proj, timeout=120))
    assert (out / "model.json").is_file() and (out / "sub" / "deeper" / "curve.csv").is_file()
    assert f"in {out}/" in other.stderr

    # A failed task's artifacts come back too, and the exit code is the task's.
    failed = m.cli("run", "train.py", "--exit", "3", cwd=proj, timeout=120)
    assert failed.returncode == 3, failed.stderr
    assert (proj / "fetchml-runs" / _task_id(failed) / "model.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_artifact_paths_never_leave_the_output_dir(sqlite_machine: Machine) -> None:
    m = sqlite_machine
    srv = m.serve(worker=True).wait_ready()
    proj = _project(m)
    outside = m.root / "outside"
    outside.mkdir()

    # A folder on the way that is a symbolic link to elsewhere: refused, nothing written there.
    trap = proj / "trap"
    trap.mkdir()
    (trap / "sub").symlink_to(outside, target_is_directory=True)
    r = m.cli("run", "--output", str(trap), "train.py", cwd=proj, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "could not bring back the artifacts" in r.stderr and "symbolic link" in r.stderr, r.stderr
    assert list(outside.iterdir()) == []
    tid = _task_id(r)

    # Paths the server sends that climb out or are absolute (as a rogue row would): refused
    # before anything is fetched, by `fetchml artifacts --download` and by the client.
    absolute = m.root / "absolute.txt"
    for bad in ("../escape.txt", str(absolute), "sub/../../escape.txt"):
        srv.db_exec(
            "INSERT INTO artifacts (task_id, attempt, path, size, sha256, created_at) "
            "SELECT task_id, attempt, ?, size, sha256, created_at FROM artifacts WHERE task_id = ? "
            "AND path = 'model.json'",
            (bad, tid),
        )
        dl = m.root / "dl"
        r = m.cli("artifacts", tid, "--download", str(dl))
        assert r.returncode == 1 and "unsafe artifact path" in r.stderr, r.stderr
        assert not (m.root / "escape.txt").exists() and not absolute.exists()
        key = m.config_data()["api_key"]
        with FetchmlClient(srv.url, key) as client, pytest.raises(ValueError, match="unsafe artifact path"):
            client.artifacts.download_all(tid, m.root / "dl2")
        assert not (m.root / "dl2").exists()
        srv.db_exec("DELETE FROM artifacts WHERE task_id = ? AND path = ?", (tid, bad))


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/etc/passwd", "\\..\\x", "C:/x", "", ".", "a/..", "a\x00b"],
)
def test_safe_destination_refuses_paths_out_of_the_root(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="unsafe artifact path"):
        safe_destination(tmp_path / "root", path)


def test_safe_destination_refuses_symbolic_links_and_keeps_the_rest_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    (root / "real" / "file-link").symlink_to(tmp_path / "x")
    for path in ("link/x", "link", "real/file-link"):
        with pytest.raises(ValueError, match="symbolic link"):
            safe_destination(root, path)
    assert safe_destination(root, "real/new/x.bin") == root / "real" / "new" / "x.bin"
    assert safe_destination(root, "a//b/./c") == root / "a" / "b" / "c"
    assert safe_destination(root, "a/../b") == root / "b"


# -- an embedded run's history, seen later through fetchml serve --------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_embedded_runs_history_shows_through_a_later_serve(sqlite_machine: Machine) -> None:
    m = sqlite_machine
    proj = _project(m)
    nobody = f"http://127.0.0.1:{free_port()}"
    run = assert_ok(m.cli("run", "train.py", cwd=proj, timeout=120, FETCHML_SERVER_URL=nobody))
    tid = _task_id(run)
    assert "running an embedded server" in run.stderr
    assert (proj / "fetchml-runs" / tid / "model.json").is_file()
    assert f"kept in {m.data_dir}" in run.stderr, run.stderr

    # No server yet: a read command says how to start one and where the history is.
    line = assert_one_line_error(m.cli("tasks"), "SERVER_UNREACHABLE", 1)
    assert "`fetchml serve`" in line and str(m.data_dir) in line, line

    # `fetchml serve` on the same (default) data dir: the first-run key, and the history is there.
    m.serve().wait_ready()
    listed = assert_ok(m.cli("tasks", "--json"))
    (task,) = json.loads(listed.stdout)["tasks"]
    assert task["id"] == tid and task["status"] == "completed" and task["user_id"] == local_user_name()
    assert "trained" in assert_ok(m.cli("logs", tid)).stdout
    arts = json.loads(assert_ok(m.cli("artifacts", tid, "--json")).stdout)
    assert sorted(a["path"] for a in arts) == ["model.json", "sub/deeper/curve.csv"]
