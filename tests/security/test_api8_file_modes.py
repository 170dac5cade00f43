"""API8 (security misconfiguration): the server's data dir, its SQLite database and the client
config file (which may hold an API key) are readable by their owner only, whether fetchml
creates them or finds them left readable by an older version."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from tests.harness import ServerHandle, run_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_data_dir_and_database_are_owner_only(
    sqlite_server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    old = os.umask(0o022)  # the usual umask, under which files come out world-readable
    try:
        srv = sqlite_server_factory(tmp_path / "fresh" / "data")
    finally:
        os.umask(old)
    assert mode(srv.data_dir) == 0o700
    db = srv.data_dir / "fetchml.db"
    assert mode(db) == 0o600
    # WAL mode: the companions exist while the server has the database open.
    companions = [p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    assert companions, "the server should hold the database open in WAL mode"
    for p in companions:
        assert mode(p) == 0o600, p


def test_loose_modes_left_by_an_older_version_are_tightened_at_start(
    sqlite_server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    first = sqlite_server_factory(tmp_path / "data")
    first.stop()
    db = first.data_dir / "fetchml.db"
    os.chmod(first.data_dir, 0o755)
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if p.exists():
            os.chmod(p, 0o644)
    again = sqlite_server_factory(first.data_dir)
    assert mode(again.data_dir) == 0o700
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if p.exists():
            assert mode(p) == 0o600, p


def test_keys_cli_creates_an_owner_only_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "keys-data"
    env = ServerHandle(data_dir=data_dir).env()
    r = run_cli(["keys", "create", "--user", "root", "--role", "admin", "--data-dir", str(data_dir)], env=env)
    assert r.returncode == 0, r.stderr
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "fetchml.db") == 0o600


def test_client_config_file_holding_a_key_is_owner_only(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg" / "config.toml"
    env = ServerHandle(data_dir=tmp_path / "unused").env() | {"FETCHML_CONFIG": str(cfg)}
    r = run_cli(["config", "set", "api_key", "fml_abcdefghijklmnop"], env=env)
    assert r.returncode == 0, r.stderr
    assert mode(cfg) == 0o600
    # One written by hand (or an older fetchml) under a 022 umask is tightened when read.
    os.chmod(cfg, 0o644)
    r = run_cli(["config", "show"], env=env)
    assert r.returncode == 0, r.stderr
    assert mode(cfg) == 0o600
