"""Two `fetchml serve` processes on one PostgreSQL database, four workers racing for 5,000 tasks.

Every decision that could go wrong across processes is made in the database (the advisory write
lock), so the two servers must behave as one: each task assigned exactly once, no GPU of a worker
given to two tasks at once, one unforked audit chain.

The workers are threads playing the worker protocol with raw HTTP calls (as tests/protocol_kit's
FakeWorker does, without the pydantic round trips): two per server, 4 GPUs and 8 batch slots each,
claiming with wait=0 and reporting each task running -> collecting -> completed at once.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerHandle, servers_on_one_database

pytestmark = pytest.mark.slow

N_TASKS = int(os.environ.get("FETCHML_RACE_TASKS", "5000"))
N_SUBMITTERS_PER_SERVER = 2
N_WORKERS_PER_SERVER = 2
GPUS_PER_WORKER = 4
BATCH_SLOTS = 8
# The whole race: 150-220 s on the 2-core development machine before the live feed, which added
# work to every commit (event rows, NOTIFY, the LISTEN side): about 475 s in a full parallel CI
# run (3,809 tasks in 362 s). CPU-bound (two servers, PostgreSQL and this test on the same CPUs);
# the limit is about correctness under contention, not a throughput target (bench/ measures that).
TIME_LIMIT = 600.0
SERVER_ENV = {
    "FETCHML_RATE_LIMIT_PER_MINUTE": str(10**9),
    # No lease may run out during the race: a requeue would be a second assignment for a reason
    # other than the one under test. The sweeper still runs in both servers all along.
    "FETCHML_HEARTBEAT_TIMEOUT": "600",
    "FETCHML_SWEEP_INTERVAL": "0.5",
    "FETCHML_ACCESS_LOG": "false",
}


def gpus_wanted(i: int) -> int:
    """About a third of the tasks want GPUs: every 10th two, every other 4th one."""
    return 2 if i % 10 == 0 else 1 if i % 4 == 0 else 0


class Race:
    """What the test harness saw, shared by all threads (every field under `lock`)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.lock = threading.Lock()
        self.submitted: dict[str, int] = {}  # task id -> GPUs wanted
        self.submit_errors: list[str] = []
        self.claims: list[tuple[str, str, int]] = []  # (worker, task id, attempt)
        self.report_errors: list[str] = []
        self.violations: list[str] = []
        self.completed = 0
        self.submitters_done = 0
        self.submitted_by = 0.0  # when the last submitter finished
        # worker -> GPU index -> the task holding it, between its claim and its completion.
        self.gpus_held: dict[str, dict[int, str]] = {}
        self.peak_gpus_held: dict[str, int] = {}

    def over(self) -> bool:
        with self.lock:
            all_in = self.submitters_done == 2 * N_SUBMITTERS_PER_SERVER
            return (all_in and self.completed >= len(self.submitted)) or time.monotonic() > self.deadline


def submitter(race: Race, srv: ServerHandle, key: str, indexes: range) -> Callable[[], None]:
    def run() -> None:
        try:
            with srv.http(key) as http:
                for i in indexes:
                    if time.monotonic() > race.deadline:
                        return
                    want = gpus_wanted(i)
                    body: dict[str, Any] = {"job_name": f"race-{i}", "priority": 1 + i % 10}
                    if want:
                        body["gpu"] = want
                    r = http.post("/v1/tasks", json=body)
                    with race.lock:
                        if r.status_code == 201:
                            race.submitted[r.json()["id"]] = want
                        else:
                            race.submit_errors.append(f"{srv.port} task {i}: {r.status_code} {r.text[:200]}")
        except Exception as exc:  # a dead thread must show up as an error, not as a short count
            with race.lock:
                race.submit_errors.append(f"{srv.port}: {type(exc).__name__}: {exc}")
        finally:
            with race.lock:
                race.submitters_done += 1
                race.submitted_by = time.monotonic()

    return run


def worker(race: Race, srv: ServerHandle, key: str, name: str) -> Callable[[], None]:
    def report(http: httpx.Client, task_id: str, attempt: int, status: str) -> bool:
        body: dict[str, Any] = {"attempt": attempt, "status": status}
        if status == "completed":
            body["exit_code"] = 0
        r = http.post(f"/v1/tasks/{task_id}/report", json=body)
        if r.status_code != 200:
            # A 409 here would mean the live attempt was taken away: a second assignment.
            with race.lock:
                race.report_errors.append(
                    f"{name} {task_id}#{attempt} {status}: {r.status_code} {r.text[:200]}"
                )
            return False
        return True

    def run() -> None:
        try:
            with srv.http(key) as http:
                gpus = [{"index": g, "name": "race-gpu", "memory_mb": 1024} for g in range(GPUS_PER_WORKER)]
                r = http.post(
                    "/v1/workers/register",
                    json={
                        "name": name,
                        "capabilities": {
                            "cpu_cores": 64,
                            "memory_gb": 256,
                            "gpu_count": GPUS_PER_WORKER,
                            "gpu_type": "race-gpu",
                            "gpus": gpus,
                        },
                        "batch_slots": BATCH_SLOTS,
                    },
                )
                assert r.status_code == 200, r.text
                with race.lock:
                    race.gpus_held[name] = {}
                    race.peak_gpus_held[name] = 0
                while not race.over():
                    held: list[tuple[str, int, list[int]]] = []
                    # Fill the batch slots: several tasks (and their GPUs) held at once.
                    while len(held) < BATCH_SLOTS and time.monotonic() < race.deadline:
                        r = http.post(f"/v1/workers/{name}/claim", params={"wait": 0})
                        if r.status_code == 204:
                            break
                        if r.status_code != 200:
                            with race.lock:
                                race.report_errors.append(f"{name} claim: {r.status_code} {r.text[:200]}")
                            break
                        a = r.json()
                        task_id, attempt, got = a["task"]["id"], a["attempt"], list(a["gpus"])
                        with race.lock:
                            race.claims.append((name, task_id, attempt))
                            if len(got) != a["task"].get("gpu", 0):  # absent: none asked for
                                race.violations.append(f"{task_id} wanted {a['task'].get('gpu')} GPUs, got {got}")
                            mine = race.gpus_held[name]
                            for g in got:
                                if g in mine:
                                    race.violations.append(
                                        f"{name} GPU {g} given to {task_id} while {mine[g]} holds it"
                                    )
                                if not 0 <= g < GPUS_PER_WORKER:
                                    race.violations.append(f"{name} has no GPU {g} ({task_id})")
                                mine[g] = task_id
                            race.peak_gpus_held[name] = max(race.peak_gpus_held[name], len(mine))
                        held.append((task_id, attempt, got))
                    if not held:
                        time.sleep(0.05)
                        continue
                    for task_id, attempt, got in held:
                        ok = all(
                            report(http, task_id, attempt, s) for s in ("running", "collecting", "completed")
                        )
                        with race.lock:
                            mine = race.gpus_held[name]
                            for g in got:
                                if mine.get(g) == task_id:
                                    del mine[g]
                            if ok:
                                race.completed += 1
        except Exception as exc:
            with race.lock:
                race.report_errors.append(f"{name}: {type(exc).__name__}: {exc}")

    return run


def _utc(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.mark.timeout(840)  # its own limit is TIME_LIMIT (600 s) plus the checks
def test_two_servers_four_workers_assign_every_task_exactly_once(tmp_path: Path) -> None:
    # Both start at once: both run the migrations on the empty database.
    with servers_on_one_database(tmp_path, env=SERVER_ENV, together=True) as servers:
        a = servers[0]
        admin = a.make_key("root", "admin")
        user = a.make_key("alice", "user")
        worker_keys = [
            a.make_key(f"race-box-{i}", "worker", worker_name=f"race-w{i}")
            for i in range(2 * N_WORKERS_PER_SERVER)
        ]

        began = time.monotonic()
        race = Race(deadline=began + TIME_LIMIT)
        n_submitters = 2 * N_SUBMITTERS_PER_SERVER
        threads = [
            threading.Thread(
                target=submitter(race, servers[j % 2], user, range(j, N_TASKS, n_submitters)),
                name=f"submit-{j}",
            )
            for j in range(n_submitters)
        ] + [
            threading.Thread(
                target=worker(race, servers[j % 2], worker_keys[j], f"race-w{j}"), name=f"worker-{j}"
            )
            for j in range(2 * N_WORKERS_PER_SERVER)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, race.deadline + 60 - time.monotonic()))
        elapsed = time.monotonic() - began
        alive = [t.name for t in threads if t.is_alive()]
        race.deadline = 0  # stop any straggler
        print(
            f"\nrace: {len(race.submitted)} tasks submitted (in {race.submitted_by - began:.1f}s) and "
            f"{race.completed} completed in {elapsed:.1f}s "
            f"({len(race.claims)} claims; peak GPUs held per worker {race.peak_gpus_held})"
        )

        # The run itself: every thread finished, every task went in and came out.
        assert not alive, f"threads still running: {alive}"
        assert race.submit_errors == []
        assert len(race.submitted) == N_TASKS
        assert race.completed == N_TASKS, f"only {race.completed}/{N_TASKS} completed in {elapsed:.0f}s"
        assert elapsed < TIME_LIMIT

        # Exactly once: no second claim, no attempt past the first, no report refused.
        assert race.report_errors == []
        claimed = Counter(task_id for _, task_id, _ in race.claims)
        assert [t for t, n in claimed.items() if n > 1] == []
        assert set(claimed) == set(race.submitted)
        assert {attempt for _, _, attempt in race.claims} == {1}
        assert race.violations == []
        assert all(peak >= 2 for peak in race.peak_gpus_held.values()), race.peak_gpus_held

        # The database agrees.
        rows = a.db_exec(
            "SELECT id, status, attempt, retry_count, worker_id, assigned_gpus, started_at, ended_at FROM tasks"
        )
        assert len(rows) == N_TASKS
        assert Counter((r[1], r[2], r[3]) for r in rows) == {("completed", 1, 0): N_TASKS}
        by_worker = dict(Counter(r[4] for r in rows))
        assert set(by_worker) == {f"race-w{j}" for j in range(2 * N_WORKERS_PER_SERVER)}, by_worker
        # No GPU of a worker in two tasks' [started_at, ended_at] at once.
        spans: dict[tuple[str, int], list[tuple[datetime, datetime, str]]] = {}
        for task_id, _, _, _, worker_id, gpus, started, ended in rows:
            for g in json.loads(gpus):
                spans.setdefault((worker_id, g), []).append((_utc(started), _utc(ended), task_id))
        for (worker_id, g), held in spans.items():
            held.sort()
            for (_, end1, t1), (start2, _, t2) in itertools.pairwise(held):
                assert end1 <= start2, f"{worker_id} GPU {g}: {t1} (to {end1}) overlaps {t2} (from {start2})"

        # One audit chain, whole, seen the same through both servers.
        results = []
        for s in servers:
            with s.http(admin) as http:
                r = http.post("/v1/audit/verify", timeout=120)
                assert r.status_code == 200, r.text
                results.append(r.json())
        assert [v["valid"] for v in results] == [True, True], results
        assert results[1]["total_events"] == results[0]["total_events"] + 1  # + the first verify
        roots = []
        for s in servers:
            with s.http(admin) as http:
                r = http.get("/v1/audit/chain-root")
                assert r.status_code == 200, r.text
                roots.append(r.json())
        assert roots[0] == roots[1], roots
        assert roots[0]["total_events"] == results[1]["total_events"] + 1  # + the second verify
        seqs = a.db_exec("SELECT count(*), min(sequence_num), max(sequence_num) FROM audit_events")[0]
        assert (seqs[0], seqs[1], seqs[2]) == (roots[0]["total_events"], 1, roots[0]["total_events"])
        # Each task: queued, started, completed, each recorded once.
        kinds = Counter(
            r[0] for r in a.db_exec("SELECT event_type FROM audit_events WHERE resource LIKE 'task:%'")
        )
        assert (kinds["job_queued"], kinds["job_started"], kinds["job_completed"]) == (N_TASKS,) * 3, kinds
