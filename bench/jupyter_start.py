"""bench/jupyter_start: start-to-running of a Jupyter service on a local worker.

A real server on loopback and a real `fetchml worker --executor local --service-slots 1`; each
round POSTs a service, polls until it is `running` (its worker's probe of `/api/status` with
the token answered 200) and DELETEs it, waiting until it is `stopped` so the slot is free for
the next round. Reported: the wall time from the POST to the first `running` read (what a user
waits for in `fetchml jupyter start`), and the server's own started_at - created_at.

Goal (issue 13): under 5 s at p50.

    python -m bench.jupyter_start --services 10
    python -m bench.jupyter_start --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.harness import REPO, ServerHandle, die_with_parent


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def one(http: Any, i: int, worker: subprocess.Popen[bytes]) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = http.post("/v1/jupyter/services", json={"name": f"bench-{i}", "workspace": "bench"})
    r.raise_for_status()
    sid = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        r = http.get(f"/v1/jupyter/services/{sid}")
        r.raise_for_status()
        s = r.json()
        if s["status"] == "running":
            wall = time.perf_counter() - t0
            break
        if s["status"] in ("error", "stopped") or time.monotonic() > deadline or worker.poll() is not None:
            raise RuntimeError(f"service {sid} did not start: {s}")
        time.sleep(0.05)
    server_side = (_ts(s["started_at"]) - _ts(s["created_at"])).total_seconds()
    assert http.delete(f"/v1/jupyter/services/{sid}").status_code == 204
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jupyter/services/{sid}").json()["status"] != "stopped":
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {sid} did not stop")
        time.sleep(0.05)
    return wall, server_side


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fetchml-bench-jupyter-") as tmp:
        server = ServerHandle(
            data_dir=Path(tmp),
            env_extra={
                "FETCHML_LOG_LEVEL": "warning",
                "FETCHML_ACCESS_LOG": "false",
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000",
            },
        )
        user = server.make_key("bench", "user")
        wkey = server.make_key("bench-worker", "worker")
        server.start()
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "fetchml", "worker",
                "--server", server.url,
                "--name", "bench-worker",
                "--executor", "local",
                "--service-slots", "1",
                "--work-dir", str(Path(tmp) / "w"),
                "--log-level", "warning",
                "--stop-grace", "2",
            ],
            cwd=REPO,
            env={**server.env(), "FETCHML_API_KEY": wkey},
            preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            with server.http(user) as http:
                one(http, -1, worker)  # warm-up: the first import of jupyter_server fills the page cache
                walls, servers = [], []
                for i in range(n):
                    wall, server_side = one(http, i, worker)
                    walls.append(wall)
                    servers.append(server_side)
        finally:
            worker.terminate()
            worker.wait(30)
            server.stop()
    ms = [w * 1000 for w in walls]
    return {
        "services": n,
        "post_to_running_p50_ms": round(pct(ms, 50), 1),
        "post_to_running_p95_ms": round(pct(ms, 95), 1),
        "post_to_running_mean_ms": round(statistics.fmean(ms), 1),
        "server_started_minus_created_p50_ms": round(pct([s * 1000 for s in servers], 50), 1),
        "goal_p50_ms": 5000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args.services)
    if args.json:
        print(json.dumps(out))
        return
    print(f"Jupyter start-to-running on a local worker, {out['services']} services, one at a time")
    print(
        f"  POST -> running   p50 {out['post_to_running_p50_ms']:8.1f} ms   p95 {out['post_to_running_p95_ms']:8.1f} ms"
    )
    print(
        f"  server-side       p50 {out['server_started_minus_created_p50_ms']:8.1f} ms   (started_at - created_at)"
    )
    print(f"  goal: p50 under {out['goal_p50_ms']} ms")


if __name__ == "__main__":
    main()
