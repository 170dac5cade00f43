"""bench/throughput: tasks executed per second, end to end, through a real server and worker.

A real `fetchml serve --no-worker`-style server (SQLite, production clock) and one real
`fetchml worker --executor local --batch-slots 2`. N `true` tasks are submitted from 8 keep-alive
connections as fast as the server takes them; the figure is N over the time from the first
submission to the last completion (every task must complete). Then, on the idle worker, tasks are
submitted one at a time and the dispatch latency (submit -> running, both stamped by the server)
is taken, with tasks that outlast the worker's running-report window.

Where each task's time goes: the worker's own phases (`fetchml worker --phase-log`, see
fetchml/runner/phases.py: claim, start, prepare, spawn, report_running, run, logs, collect,
report_end; one after the other, no overlap), and the server's stamps (queued -> running ->
ended).

    python -m bench.throughput --tasks 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_seconds, post_json, run_load
from bench.dispatch import DISPATCH_TASK
from fetchml.runner.phases import PHASES
from tests.harness import REPO, ServerHandle, die_with_parent


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
    return data[k]


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def all_tasks(http: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = http.get("/v1/tasks", params={"limit": 500, "offset": offset}).json()
        out += page["tasks"]
        offset += len(page["tasks"])
        if not page["tasks"] or offset >= page["total"]:
            return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks in the throughput run")
    ap.add_argument("--slots", type=int, default=2, help="the worker's batch slots")
    ap.add_argument("--dispatch", type=int, default=30, help="tasks in the idle-dispatch run")
    ap.add_argument("--time-limit", type=float, default=300.0, help="give up after this many seconds")
    ap.add_argument(
        "--running-report-window",
        type=float,
        default=None,
        help="the worker's --running-report-window (default: the worker's own; 0: every task "
        "reports running on its own, as before that window)",
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fetchml-bench-") as tmp:
        server = ServerHandle(
            data_dir=Path(tmp) / "server",
            env_extra={
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000",
                "FETCHML_LOG_LEVEL": "warning",
                "FETCHML_CLOCK_OFFSET_FILE": "",
            },
        )
        user = server.make_key("bench", "user")
        worker_key = server.make_key("wk-bench", "worker", worker_name="bench")
        server.start()
        log = (Path(tmp) / "worker.log").open("ab")
        window = (
            []
            if args.running_report_window is None
            else ["--running-report-window", str(args.running_report_window)]
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "fetchml", "worker", "--server", server.url, "--name", "bench",
             "--executor", "local", "--batch-slots", str(args.slots), "--service-slots", "0",
             "--work-dir", str(Path(tmp) / "work"), "--phase-log", str(Path(tmp) / "phases.jsonl"),
             *window],
            cwd=REPO, env={**server.env(), "FETCHML_API_KEY": worker_key, "FETCHML_LOG_LEVEL": "warning"},
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            with server.http(user) as http:
                _wait(lambda: server.db_exec("SELECT status FROM workers") == [("active",)], 30)
                assert server.proc is not None
                cpu = (cpu_seconds(server.proc.pid), cpu_seconds(worker.pid))
                result = _throughput(server, user, http, args)
                result["worker_phases_ms"] = _phases(Path(tmp) / "phases.jsonl", args.tasks)
                # CPU per task of each process, over the whole run: steadier than the rate on a
                # shared machine, and it says which process the rate is waiting on.
                result["server_cpu_ms_per_task"] = round(
                    (cpu_seconds(server.proc.pid) - cpu[0]) * 1000 / args.tasks, 2
                )
                result["worker_cpu_ms_per_task"] = round(
                    (cpu_seconds(worker.pid) - cpu[1]) * 1000 / args.tasks, 2
                )
                result["dispatch"] = _dispatch(http, args.dispatch)
        finally:
            worker.terminate()
            worker.wait(30)
            server.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"bench/throughput  tasks={args.tasks}  local worker, {args.slots} batch slots  (`true` tasks)")
        print(
            f"  end to end          : {result['tasks_per_s']} tasks/s  ({result['elapsed_s']} s, first submit -> last completion)"
        )
        print(f"  submitting          : {result['submit_s']} s for all {args.tasks}")
        print(
            f"  one report          : {result['one_report']} of {args.tasks} ended within the running-report "
            "window (their end reported their start)"
        )
        print(
            f"  CPU per task        : server {result['server_cpu_ms_per_task']} ms, "
            f"worker {result['worker_cpu_ms_per_task']} ms (its own process, not the tasks')"
        )
        print("  per task, worker phases (p50 / p99 / mean ms):")
        for name, (p50, p99, mean) in result["worker_phases_ms"].items():
            print(f"    {name:<18}: {p50} / {p99} / {mean}")
        print("  per task, server stamps (p50 / p99 ms):")
        for name, (p50, p99) in result["phases_ms"].items():
            print(f"    {name:<18}: {p50} / {p99}")
        d = result["dispatch"]
        print(
            f"  idle dispatch, submit -> running: p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms "
            f"({d['tasks']} `{DISPATCH_TASK}` tasks)"
        )
    return 0 if result["completed"] == args.tasks else 1


def _phases(path: Path, n: int) -> dict[str, tuple[float, float, float]]:
    """p50, p99 and mean of each worker phase over the run's attempts. A line is written as its
    attempt lets go of everything, just after its last report: wait for the last few."""
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if len(lines) >= n:
            break
        time.sleep(0.1)
    out: dict[str, tuple[float, float, float]] = {}
    for name in PHASES:
        values = [x[name] / 1000 for x in lines if name in x]
        if values:
            out[name] = (
                round(pct(values, 50) * 1000, 2),
                round(pct(values, 99) * 1000, 2),
                round(statistics.fmean(values) * 1000, 2),
            )
    return out


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def _throughput(
    server: ServerHandle, key: str, http: httpx.Client, args: argparse.Namespace
) -> dict[str, Any]:
    def request(i: int) -> bytes:
        return post_json(
            "/v1/tasks", "127.0.0.1", server.port, key, {"job_name": f"tp-{i % 50}", "entrypoint": "true"}
        )

    start = time.monotonic()
    res = asyncio.run(
        run_load(
            "127.0.0.1", server.port, request, concurrency=8, total=args.tasks, time_limit=args.time_limit
        )
    )
    submitted = time.monotonic() - start
    if res.ok(201) != args.tasks:
        raise RuntimeError(f"submissions refused: {res.statuses}")
    deadline = start + args.time_limit
    while True:
        done = http.get("/v1/tasks", params={"status": "completed", "limit": 1}).json()["total"]
        failed = http.get("/v1/tasks", params={"status": "failed", "limit": 1}).json()["total"]
        if done + failed >= args.tasks:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done + failed} of {args.tasks} tasks ended in time")
        # The figure comes from the server's own stamps (first created_at, last ended_at), not
        # from when this loop notices the end: polling slowly costs the run nothing but keeps
        # the bench's own reads (two counts over the tasks table) off the server it measures.
        time.sleep(0.5)
    tasks = all_tasks(http)
    first = min(ts(t["created_at"]) or 0 for t in tasks)
    last = max(ts(t.get("ended_at")) or 0 for t in tasks)
    elapsed = last - first
    phases: dict[str, list[float]] = {"queued->running": [], "running->ended": [], "created->ended": []}
    for t in tasks:
        c, s, e = ts(t["created_at"]), ts(t.get("started_at")), ts(t.get("ended_at"))
        if c and s and e:
            phases["queued->running"].append(s - c)
            phases["running->ended"].append(e - s)
            phases["created->ended"].append(e - c)
    return {
        "tasks": args.tasks,
        "completed": done,
        "failed": failed,
        "elapsed_s": round(elapsed, 2),
        "submit_s": round(submitted, 2),
        "tasks_per_s": round(args.tasks / elapsed, 1) if elapsed > 0 else 0.0,
        # Started and ended in one transaction: the process ended within the worker's running-
        # report window, so its end was its one report (--running-report-window).
        "one_report": sum(
            1 for t in tasks if t.get("started_at") and t.get("started_at") == t.get("ended_at")
        ),
        "phases_ms": {
            k: (round(pct(v, 50) * 1000, 1), round(pct(v, 99) * 1000, 1)) for k, v in phases.items()
        },
        "mean_run_ms": round(statistics.fmean(phases["running->ended"]) * 1000, 1) if tasks else None,
    }


def _dispatch(http: httpx.Client, n: int) -> dict[str, Any]:
    lat: list[float] = []
    for i in range(n):
        r = http.post("/v1/tasks", json={"job_name": f"dispatch-{i}", "entrypoint": DISPATCH_TASK})
        r.raise_for_status()
        tid = r.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            t = http.get(f"/v1/tasks/{tid}").json()
            if t["status"] in ("completed", "failed"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {tid} did not end")
            time.sleep(0.01)
        c, s = ts(t["created_at"]), ts(t.get("started_at"))
        if c and s:
            lat.append(s - c)
    return {"tasks": n, "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1)}


if __name__ == "__main__":
    sys.exit(main())
