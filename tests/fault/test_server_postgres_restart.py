"""PostgreSQL stopped and started again mid-burst (a private instance of this test's own): no
500 on any request (503 "database unavailable" during the outage, authentication included),
no acknowledged task lost, and the server recovers without a restart."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.fault.server_kit import is_envelope, private_postgres
from tests.harness import ServerHandle, wait_for


def test_postgres_restart_mid_burst(tmp_path: Path) -> None:
    with private_postgres() as pg:
        srv = ServerHandle(
            data_dir=tmp_path / "srv",
            database_url=pg.url,
            env_extra={"FETCHML_RATE_LIMIT_PER_MINUTE": "1000000"},
        ).start()
        try:
            user, admin = srv.make_key("alice", "user"), srv.make_key("root", "admin")
            fresh = srv.make_key("bob", "user")  # first used during the outage: no cached auth
            acked: list[str] = []
            statuses: Counter[int] = Counter()
            bad: list[str] = []
            lock = threading.Lock()
            stop = threading.Event()

            def submit(n: int) -> None:
                with httpx.Client(base_url=srv.url, headers={"X-API-Key": user}, timeout=30) as http:
                    for i in range(100_000):  # bounded; `stop` ends it
                        if stop.is_set():
                            return
                        r = http.post("/v1/tasks", json={"job_name": f"pg-{n}-{i}", "entrypoint": "x"})
                        with lock:
                            statuses[r.status_code] += 1
                            if r.status_code == 201:
                                acked.append(r.json()["id"])
                            elif r.status_code != 503 or not is_envelope(r):
                                bad.append(f"{r.status_code} {r.text[:200]}")
                        if r.status_code == 503:
                            time.sleep(0.05)

            threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            try:
                wait_for(lambda: len(acked) >= 50, timeout=30, what="the burst to get going")
                pg.stop("fast")
                with srv.http(fresh) as http:
                    r = http.get("/v1/tasks")
                assert r.status_code == 503 and is_envelope(r), r.text
                assert r.json()["code"] == "SERVICE_UNAVAILABLE"
                assert "unavailable" in r.json()["error"], r.text
                assert "Retry-After" in r.headers
                wait_for(lambda: statuses[503] >= 20, timeout=20, what="503s during the outage")
                pg.start()
                before = len(acked)
                wait_for(lambda: len(acked) >= before + 50, timeout=30, what="201s after PostgreSQL returned")
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            assert not bad, bad[:5]
            assert statuses[500] == 0
            with srv.http(fresh) as http:
                assert http.get("/v1/tasks").status_code == 200
            stored = {row[0] for row in srv.db_exec("SELECT id FROM tasks")}
            lost = set(acked) - stored
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged tasks lost"
            with srv.http(admin) as http:
                verify = http.post("/v1/audit/verify").json()
            assert verify["valid"] is True, verify
            log = srv.log()
            assert "Traceback" not in log, log[-4000:]
            assert " 500 " not in log
        finally:
            srv.stop()
