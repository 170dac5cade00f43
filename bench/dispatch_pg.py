"""bench/dispatch_pg: a task submitted on one server, dispatched by another, one PostgreSQL database.

Two servers, A and B, share a fresh PostgreSQL database (tests/backends.py: FETCHML_TEST_PG_URL,
default the local postgres). A worker waits on B; tasks are submitted on A one at a time, each
after a random pause (0.1-0.3 s), so submissions fall at every phase of anything periodic on B.
B learns of the task from PostgreSQL NOTIFY (without it, from its once-a-second look at the
database). Two workers, each against B and then, as the baseline, against A:

- `claim`: the worker protocol by hand (register, long-poll claim, report running, collecting,
  completed): submit sent -> claim answered, both read on this process's clock. This is the
  dispatch path alone.
- `local`: the real `fetchml worker` with the local executor (as bench/dispatch.py): the task's
  started_at - created_at (stamped by the servers), so claim, staging, process start, the
  worker's running-report window and the `running` report (`sleep 0.05` tasks).

    python -m bench.dispatch_pg --tasks 30
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.dispatch import DISPATCH_TASK, summary
from tests.backends import create_database, drop_database, pg_unavailable_reason
from tests.harness import REPO, ServerHandle, die_with_parent

WARMUP = 3


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _pause(rng: random.Random) -> None:
    # A random phase, not a wait for a condition: the bench wants submissions spread over time.
    time.sleep(rng.uniform(0.1, 0.3))


def claim_latencies(
    submit_on: ServerHandle, claim_on: ServerHandle, keys: dict[str, str], n: int
) -> tuple[list[float], list[float]]:
    """Submit on one server while a hand-driven worker long-polls the other: (submit sent ->
    claim answered, submit sent -> submit answered) per task."""
    rng = random.Random(1)
    name = f"claimer-{claim_on.port}"
    out: list[float] = []
    submits: list[float] = []
    with submit_on.http(keys["user"]) as user, claim_on.http(keys[name]) as worker:
        worker.timeout = 60
        r = worker.post(
            "/v1/workers/register",
            json={"name": name, "capabilities": {"cpu_cores": 4, "memory_gb": 8}, "batch_slots": 1},
        )
        r.raise_for_status()
        worker_id = r.json()["worker_id"]
        for i in range(n + WARMUP):
            answer: dict[str, Any] = {}

            def claim(answer: dict[str, Any] = answer) -> None:
                resp = worker.post(f"/v1/workers/{worker_id}/claim", params={"wait": 20})
                answer["at"] = time.perf_counter()
                answer["status"] = resp.status_code
                answer["body"] = resp.json() if resp.status_code == 200 else None

            t = threading.Thread(target=claim, daemon=True)
            t.start()
            _pause(rng)  # the claim is parked on B by now (and B's periodic look has some phase)
            t0 = time.perf_counter()
            r = user.post("/v1/tasks", json={"job_name": f"claim-{i}", "entrypoint": "true"})
            t1 = time.perf_counter()
            r.raise_for_status()
            task_id = r.json()["id"]
            t.join(30)
            if t.is_alive() or answer.get("status") != 200:
                raise RuntimeError(f"no assignment for {task_id} within the claim wait: {answer}")
            assigned = answer["body"]
            if assigned["task"]["id"] != task_id:
                raise RuntimeError(f"claimed {assigned['task']['id']}, submitted {task_id}")
            if i >= WARMUP:
                out.append(answer["at"] - t0)
                submits.append(t1 - t0)
            for status in ("running", "collecting", "completed"):
                body: dict[str, Any] = {"attempt": assigned["attempt"], "status": status}
                if status == "completed":
                    body["exit_code"] = 0
                worker.post(f"/v1/tasks/{task_id}/report", json=body).raise_for_status()
    return out, submits


def worker_latencies(
    submit_on: ServerHandle, work_on: ServerHandle, keys: dict[str, str], n: int, work_dir: Path
) -> list[float]:
    """Submit on one server while a real local-executor worker serves the other."""
    rng = random.Random(2)
    name = f"worker-{work_on.port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fetchml", "worker", "--server", work_on.url, "--name", name,
         "--executor", "local", "--work-dir", str(work_dir / name), "--log-level", "warning",
         "--stop-grace", "2"],
        cwd=REPO,
        env={**work_on.env(), "FETCHML_API_KEY": keys[name]},
        preexec_fn=die_with_parent,
    )  # fmt: skip
    out: list[float] = []
    try:
        with submit_on.http(keys["user"]) as user, submit_on.http(keys["admin"]) as admin:
            for _ in range(300):  # the worker registers within seconds
                if admin.get("/v1/queue").json()["workers"] >= 1:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("the worker did not register")
            for i in range(n + WARMUP):
                _pause(rng)
                r = user.post("/v1/tasks", json={"job_name": f"local-{i}", "entrypoint": DISPATCH_TASK})
                r.raise_for_status()
                task_id = r.json()["id"]
                deadline = time.monotonic() + 30
                while True:
                    task = user.get(f"/v1/tasks/{task_id}").json()
                    if task["status"] in ("completed", "failed"):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"task {task_id} did not finish: {task}")
                    time.sleep(0.02)
                if task["status"] != "completed":
                    raise RuntimeError(f"task {task_id} failed: {task.get('error')}")
                if i >= WARMUP:
                    out.append((_ts(task["started_at"]) - _ts(task["created_at"])).total_seconds())
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return out


def run(n: int, modes: list[str]) -> dict[str, Any]:
    url = create_database()
    try:
        with tempfile.TemporaryDirectory(prefix="fetchml-dispatch-pg-") as tmp:
            env = {"FETCHML_LOG_LEVEL": "warning", "FETCHML_ACCESS_LOG": "false"}
            # One data dir for both, as a deployment of several servers shares it.
            a = ServerHandle(data_dir=Path(tmp) / "data", env_extra=env, database_url=url)
            b = ServerHandle(data_dir=Path(tmp) / "data", env_extra=env, database_url=url)
            keys = {"user": a.make_key("bench", "user"), "admin": a.make_key("bench-admin", "admin")}
            for s in (a, b):
                for prefix in ("claimer", "worker"):
                    name = f"{prefix}-{s.port}"
                    keys[name] = a.make_key(name, "worker", worker_name=name)
            a.start()
            b.start()
            results: dict[str, Any] = {}
            try:
                # A task goes to a worker that claims: only the one being measured does.
                if "claim" in modes:
                    cross, submits = claim_latencies(a, b, keys, n)
                    results["claim, cross-server (submit A, claim B)"] = summary(cross)
                    same, more = claim_latencies(a, a, keys, n)
                    results["claim, same server (submit A, claim A)"] = summary(same)
                    results["submit answered (POST /v1/tasks on A)"] = summary(submits + more)
                if "local" in modes:
                    work = Path(tmp) / "work"
                    results["local worker, cross-server (on B)"] = summary(
                        worker_latencies(a, b, keys, n, work)
                    )
                    results["local worker, same server (on A)"] = summary(
                        worker_latencies(a, a, keys, n, work)
                    )
            except BaseException:
                for s in (a, b):
                    print(f"server {s.port} log (tail):\n{s.log()[-3000:]}", file=sys.stderr)
                raise
            finally:
                a.stop()
                b.stop()
    finally:
        drop_database(url)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=30, help="measured tasks per case (after 3 warm-up tasks)")
    ap.add_argument("--modes", default="claim,local", help="comma-separated: claim, local")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    reason = pg_unavailable_reason()
    if reason is not None:
        print(f"bench/dispatch_pg needs PostgreSQL: {reason}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results = run(args.tasks, modes)
    if args.json:
        print(json.dumps(results))
        return 0
    print(
        f"bench/dispatch_pg  two servers on one PostgreSQL database, {args.tasks} tasks per case, idle worker"
    )
    print("  claim: submit sent -> claim answered;  local worker: started_at - created_at")
    for k, v in results.items():
        print(
            f"  {k:<40} p50 {v['p50_ms']:7.1f} ms   p99 {v['p99_ms']:7.1f} ms   mean {v['mean_ms']:7.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
