"""`fetchml doctor` as a subprocess: a healthy setup, and each broken one this machine can make
(a refused key, no server, no Docker daemon, a full work dir, no key at all)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml import __version__
from tests.backends import SQLITE
from tests.cli.conftest import Result, cli_env, run, unreachable_url
from tests.harness import ServerHandle, ServerPool
from tests.protocol_kit import FakeWorker

STATUSES = {"ok", "warn", "fail", "skip"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One server for the module, on SQLite: the database is not the point here."""
    pool = ServerPool(SQLITE)
    try:
        yield pool.handle(tmp_path_factory.mktemp("srv"), {"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}).start()
    finally:
        pool.close()


def doctor(env: dict[str, str], tmp_path: Path, *extra: str) -> tuple[Result, dict[str, Any]]:
    """`fetchml doctor --json` with the work dir in tmp_path; the result and the checks by name."""
    work = tmp_path / "work"
    result = run(["doctor", "--json", "--work-dir", str(work), *extra], env)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for c in report["checks"]:
        assert c["status"] in STATUSES and c["detail"], c
        if c["status"] in ("warn", "fail"):
            assert c.get("fix"), f"{c['name']} has no fix: {c}"
    assert report["ok"] is (result.returncode == 0)
    return result, checks


def test_healthy_setup(srv: ServerHandle, tmp_path: Path) -> None:
    admin = srv.make_key("root", "admin")
    result, checks = doctor(cli_env(srv, admin), tmp_path)
    assert result.returncode == 0, result.stdout
    assert [checks[n]["status"] for n in ("config", "server", "key", "role", "versions")] == ["ok"] * 5
    assert checks["server"]["data"]["version"] == __version__
    assert checks["role"]["data"]["role"] == "admin"
    assert checks["config"]["data"]["api_key"] == {"value": admin[:12] + "…", "source": "env"}
    assert checks["data-dir"]["status"] == "ok" and checks["data-dir"]["data"]["path"] == str(srv.data_dir)
    # This machine may or may not have Docker and GPUs; either way doctor says so without failing.
    for name in ("docker", "nvidia-runtime", "gpus", "dataset-roots"):
        assert checks[name]["status"] in ("ok", "warn", "skip"), checks[name]
    if shutil.which("nvidia-smi") is None:
        assert checks["gpus"]["status"] == "warn" and "no GPUs" in checks["gpus"]["detail"]
        assert "--gpus N" in checks["gpus"]["fix"]

    # The same in words: one line per check, fixes under their problem.
    text = run(["doctor", "--work-dir", str(tmp_path / "work")], cli_env(srv, admin))
    assert text.returncode == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0].startswith("ok    config ") and lines[1].startswith("ok    server ")
    assert lines[-1] in ("All good.",) or lines[-1].startswith("Usable, with ")


def test_user_key_and_version_skew(srv: ServerHandle, tmp_path: Path) -> None:
    user = srv.make_key("alice", "user")
    result, checks = doctor(cli_env(srv, user), tmp_path)
    assert result.returncode == 0
    assert checks["role"]["data"]["role"] == "user"
    assert "needs an admin key" in checks["versions"]["detail"]

    old = FakeWorker(srv, srv.make_key("old-box", "worker", worker_name="old-box"), name="old-box")
    try:
        old.register(fetchml_version="0.0.1")
        result, checks = doctor(cli_env(srv, srv.make_key("root2", "admin")), tmp_path)
    finally:
        old.close()
    assert result.returncode == 0  # a warning
    assert checks["versions"]["status"] == "warn"
    assert "worker old-box 0.0.1" in checks["versions"]["detail"]
    assert checks["versions"]["data"]["workers"]["old-box"] == "0.0.1"


def test_worker_key_is_a_warning(srv: ServerHandle, tmp_path: Path) -> None:
    result, checks = doctor(cli_env(srv, srv.make_key("box", "worker")), tmp_path)
    assert result.returncode == 0
    assert checks["key"]["status"] == "ok" and checks["role"]["status"] == "warn"


def test_bad_key_blocks(srv: ServerHandle, tmp_path: Path) -> None:
    result, checks = doctor(cli_env(srv, "fml_" + "x" * 43), tmp_path)
    assert result.returncode == 1
    assert checks["server"]["status"] == "ok"
    assert checks["key"]["status"] == "fail" and "refuses this key" in checks["key"]["detail"]
    assert "fetchml config set api_key" in checks["key"]["fix"]
    text = run(["doctor", "--work-dir", str(tmp_path / "w")], cli_env(srv, "fml_" + "x" * 43))
    assert text.returncode == 1 and "FAIL  key" in text.stdout and "block use" in text.stdout.splitlines()[-1]


def test_no_key_blocks(srv: ServerHandle, tmp_path: Path) -> None:
    result, checks = doctor(cli_env(srv), tmp_path)
    assert result.returncode == 1
    assert checks["config"]["status"] == "fail" and "no API key" in checks["config"]["detail"]
    assert checks["server"]["status"] == "ok" and checks["key"]["status"] == "skip"


def test_server_down_blocks(tmp_path: Path) -> None:
    url = unreachable_url()
    result, checks = doctor(cli_env(key="fml_x", FETCHML_SERVER_URL=url), tmp_path)
    assert result.returncode == 1
    assert checks["server"]["status"] == "fail" and url in checks["server"]["detail"]
    assert "fetchml serve" in checks["server"]["fix"]
    assert checks["key"]["status"] == "skip" and checks["versions"]["status"] == "skip"


def test_broken_config_blocks(tmp_path: Path) -> None:
    result, checks = doctor(cli_env(FETCHML_SERVER_URL="gpu-box:9101", FETCHML_API_KEY="fml_x"), tmp_path)
    assert result.returncode == 1
    assert checks["config"]["status"] == "fail" and "invalid server URL" in checks["config"]["detail"]
    assert checks["server"]["status"] == "skip"


def test_no_docker_daemon_is_a_warning(srv: ServerHandle, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"  # nothing listens there
    env = cli_env(srv, srv.make_key("root3", "admin"), DOCKER_HOST=f"unix://{sock}")
    result, checks = doctor(env, tmp_path)
    assert result.returncode == 0
    assert checks["docker"]["status"] == "warn" and str(sock) in checks["docker"]["detail"]
    assert "DOCKER_HOST" in checks["docker"]["fix"]
    assert checks["nvidia-runtime"]["status"] == "skip"


def test_missing_dataset_root_is_a_warning(srv: ServerHandle, tmp_path: Path) -> None:
    env = cli_env(srv, srv.make_key("root4", "admin"))
    result, checks = doctor(env, tmp_path, "--dataset-root", str(tmp_path), "--dataset-root", "/no/such/root")
    assert result.returncode == 0
    assert checks["dataset-roots"]["status"] == "warn"
    assert checks["dataset-roots"]["detail"] == "/no/such/root is not a folder"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` on `path` while inside; False when this machine may not mount one."""
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield proc.returncode == 0
    finally:
        if proc.returncode == 0:
            subprocess.run(["umount", str(path)], check=True, timeout=30)


def test_full_work_dir_on_a_tmpfs_is_a_warning(srv: ServerHandle, tmp_path: Path) -> None:
    work = tmp_path / "full"
    with tmpfs(work, "1m") as mounted:
        if not mounted:
            pytest.skip("this machine may not mount a tmpfs (needs root); see the threshold test below")
        with (work / "fill").open("wb") as fh, contextlib.suppress(OSError):  # until ENOSPC
            for _ in range(64):
                fh.write(b"\0" * 65536)
                fh.flush()
        result = run(
            ["doctor", "--json", "--work-dir", str(work)], cli_env(srv, srv.make_key("root5", "admin"))
        )
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0
    assert checks["work-dir"]["status"] == "warn", checks["work-dir"]
    assert checks["work-dir"]["data"]["free_bytes"] < 65536
    assert "--work-dir" in checks["work-dir"]["fix"]


def test_free_space_under_the_threshold_is_a_warning(srv: ServerHandle, tmp_path: Path) -> None:
    free_gb = shutil.disk_usage(tmp_path).free / 1024**3
    env = cli_env(srv, srv.make_key("root6", "admin"))
    result, checks = doctor(env, tmp_path, "--min-free-gb", str(int(free_gb) + 1000))
    assert result.returncode == 0
    assert checks["work-dir"]["status"] == "warn" and "under" in checks["work-dir"]["detail"]
    result, checks = doctor(env, tmp_path, "--min-free-gb", "0", "--min-free-percent", "0")
    assert checks["work-dir"]["status"] == "ok"
