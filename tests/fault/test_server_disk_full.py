"""The SQLite database on a small tmpfs that fills up: submissions get 507 in the envelope
(never 500), /health says degraded, the database stays intact; once space returns the server
takes writes again without a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fault.server_kit import fill, is_envelope, small_tmpfs
from tests.harness import ServerHandle, wait_for

BODY = {"job_name": "full", "entrypoint": "train.py", "args": "x" * 2000}


@pytest.fixture
def mnt() -> Iterator[Path]:
    with small_tmpfs(32) as path:
        yield path


def test_full_disk_answers_507_and_recovers(tmp_path: Path, mnt: Path) -> None:
    db_file = mnt / "fetchml.db"
    # The database on the tmpfs; the server's own log stays on the ordinary disk, readable.
    srv = ServerHandle(
        data_dir=tmp_path / "srv",
        database_url=f"sqlite:///{db_file}",
        env_extra={"FETCHML_RATE_LIMIT_PER_MINUTE": "1000000"},
    )
    srv.start()
    try:
        user, admin = srv.make_key("alice", "user"), srv.make_key("root", "admin")
        with srv.http(user) as http:
            acked = [http.post("/v1/tasks", json=BODY).json()["id"] for _ in range(5)]
            filler = fill(mnt / "filler")
            statuses: list[int] = []
            last: httpx.Response | None = None
            # The WAL may still hold a little free room: submit until the disk says no.
            for _ in range(400):
                last = http.post("/v1/tasks", json=BODY)
                statuses.append(last.status_code)
                if last.status_code == 201:
                    acked.append(last.json()["id"])
                if last.status_code == 507:
                    break
            assert last is not None and last.status_code == 507, statuses[-5:]
            assert 500 not in statuses
            assert is_envelope(last) and last.json()["code"] == "SERVICE_UNAVAILABLE"
            assert "full" in last.json()["error"].lower()
            assert httpx.get(srv.url + "/health", timeout=10).json()["status"] == "degraded"
            with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

            filler.unlink()
            wait_for(
                lambda: httpx.get(srv.url + "/health", timeout=10).json()["status"] == "healthy",
                timeout=20,
                what="/health healthy once space returned",
            )
            r = http.post("/v1/tasks", json=BODY)
            assert r.status_code == 201, r.text
            acked.append(r.json()["id"])
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = {row[0] for row in conn.execute("SELECT id FROM tasks")}
        assert set(acked) <= stored  # every acknowledged task is there
        with srv.http(admin) as http:
            verify = http.post("/v1/audit/verify").json()
        assert verify["valid"] is True, verify
        assert "Traceback" not in srv.log(), srv.log()[-4000:]
    finally:
        srv.stop()
