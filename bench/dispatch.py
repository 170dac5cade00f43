"""bench/dispatch: submit-to-running latency through a real server and a real worker.

For each executor, tasks are submitted one at a time to an idle worker; the latency is the
task's started_at minus its created_at (both stamped by the server), i.e. claim, staging,
container/process start, the worker's running-report window and the `running` report (the tasks
run `sleep 0.05`, which outlasts that window). For Docker the same figure is put next to a
bare start of the same image through the Docker API (create + start), the floor any
Docker-based runner pays, so the difference is what fetchml adds.

    python -m bench.dispatch --tasks 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.harness import REPO, ServerHandle, die_with_parent

BUSYBOX_IMAGE = "fetchml-test-busybox:latest"
# Outlasts the worker's running-report window (a task that ends within it reports its start
# with its end), so the figure is what any real task waits for `running`, that window included.
DISPATCH_TASK = "sleep 0.05"


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
    return data[k]


def measure(server: ServerHandle, user_key: str, n: int, body: dict[str, Any]) -> list[float]:
    latencies: list[float] = []
    with server.http(user_key) as http:
        for i in range(n):
            r = http.post("/v1/tasks", json={**body, "job_name": f"dispatch-{i}"})
            r.raise_for_status()
            task_id = r.json()["id"]
            deadline = time.monotonic() + 60
            while True:
                r = http.get(f"/v1/tasks/{task_id}")
                r.raise_for_status()
                t = r.json()
                if t["status"] in ("completed", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"task {task_id} did not finish: {t}")
                time.sleep(0.02)
            if t["status"] != "completed":
                raise RuntimeError(f"task {task_id} failed: {t['error']}")
            from datetime import datetime

            created = datetime.fromisoformat(t["created_at"].replace("Z", "+00:00"))
            started = datetime.fromisoformat(t["started_at"].replace("Z", "+00:00"))
            latencies.append((started - created).total_seconds())
    return latencies


def run_executor(executor: str, n: int, body: dict[str, Any]) -> list[float]:
    with tempfile.TemporaryDirectory(prefix=f"fetchml-dispatch-{executor}-") as tmp:
        server = ServerHandle(
            data_dir=Path(tmp),
            # Polled every 20 ms: past the default per-key rate limit within a run.
            env_extra={
                "FETCHML_LOG_LEVEL": "warning",
                "FETCHML_ACCESS_LOG": "false",
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000",
            },
        )
        user = server.make_key("bench", "user")
        wkey = server.make_key("bench-worker", "worker", worker_name=f"bench-{executor}")
        server.start()
        args = [
            sys.executable,
            "-m",
            "fetchml",
            "worker",
            "--server",
            server.url,
            "--name",
            f"bench-{executor}",
            "--executor",
            executor,
            "--work-dir",
            str(Path(tmp) / "w"),
            "--log-level",
            "warning",
            "--stop-grace",
            "2",
        ]
        if executor == "docker":
            args += ["--default-image", BUSYBOX_IMAGE]
        worker = subprocess.Popen(
            args, cwd=REPO, env={**server.env(), "FETCHML_API_KEY": wkey}, preexec_fn=die_with_parent
        )
        try:
            # Wait until the worker has registered.
            with server.http(server.make_key("bench-admin", "admin")) as http:
                for _ in range(300):
                    if http.get("/v1/queue").json()["workers"] >= 1:
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"the {executor} worker did not register")
            measure(server, user, 3, body)  # warm-up: caches, first container
            return measure(server, user, n, body)
        finally:
            worker.terminate()
            worker.wait(30)
            server.stop()


def bare_docker_starts(n: int) -> list[float]:
    import docker

    client = docker.from_env()
    client.images.get(BUSYBOX_IMAGE)
    out: list[float] = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        c = client.containers.run(BUSYBOX_IMAGE, ["true"], detach=True, labels={"fetchml.bench": "bare"})
        dt = time.perf_counter() - t0
        c.wait()
        c.remove(force=True)
        if i >= 3:
            out.append(dt)
    return out


def docker_ready() -> bool:
    try:
        import docker

        docker.from_env().images.get(BUSYBOX_IMAGE)
        return True
    except Exception:
        return False


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--skip-docker", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    results: dict[str, Any] = {}
    results["local"] = summary(run_executor("local", args.tasks, {"entrypoint": DISPATCH_TASK}))
    if args.skip_docker:
        pass
    elif not docker_ready():
        results["docker"] = "skipped: no Docker daemon or no fetchml-test-busybox image (run .ci/docker.sh)"
    else:
        results["docker"] = summary(
            run_executor("docker", args.tasks, {"entrypoint": DISPATCH_TASK, "image": BUSYBOX_IMAGE})
        )
        results["bare_docker_start"] = summary(bare_docker_starts(args.tasks))
        results["docker_added_p50_ms"] = round(
            results["docker"]["p50_ms"] - results["bare_docker_start"]["p50_ms"], 1
        )
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"bench/dispatch  submit -> running, {args.tasks} tasks each, idle worker")
    for k, v in results.items():
        if isinstance(v, dict):
            print(
                f"  {k:<18} p50 {v['p50_ms']:7.1f} ms   p99 {v['p99_ms']:7.1f} ms   mean {v['mean_ms']:7.1f} ms"
            )
        else:
            print(f"  {k:<18} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
