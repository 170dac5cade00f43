"""bench/cli: how long `fetchml` takes to start, next to a bare `python -c pass` on the same machine.

Three commands, each timed in pairs with the baseline (the two run back to back, which one goes
first alternating from round to round, so a change in machine load hits both alike):

- `fetchml --help`
- `fetchml tasks --help`: one command's help (typer and that command's module)
- `fetchml tasks`: a client command against a real server on loopback (tests/harness.py
  ServerHandle, SQLite in a temporary folder) holding --tasks queued tasks, reached through
  FETCHML_SERVER_URL and FETCHML_API_KEY

Prints each command's median, the baseline's median over the same pairs, and their ratio; the goal
(issue 17) is at most 3x. Exit 1 when a ratio is over --max-ratio. `--explain` adds, per command,
the imports that cost most (python -X importtime, one run).

    python -m bench.cli                # --rounds 30
    python -m bench.cli --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.harness import ServerHandle, base_env

REPO = Path(__file__).resolve().parent.parent
BASELINE = [sys.executable, "-c", "pass"]


def fetchml_command() -> list[str]:
    """The console script users run, next to this interpreter; `python -m fetchml` without one."""
    script = Path(sys.executable).parent / "fetchml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fetchml"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


def paired(argv: list[str], env: dict[str, str], rounds: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):  # bytecode caches and the page cache, for both
        timed(argv, env)
        timed(BASELINE, env)
    cmd: list[float] = []
    base: list[float] = []
    for i in range(rounds):
        if i % 2:
            base.append(timed(BASELINE, env))
            cmd.append(timed(argv, env))
        else:
            cmd.append(timed(argv, env))
            base.append(timed(BASELINE, env))
    cmd_ms, base_ms = statistics.median(cmd) * 1000, statistics.median(base) * 1000
    return {
        "median_ms": round(cmd_ms, 1),
        "baseline_median_ms": round(base_ms, 1),
        "ratio": round(cmd_ms / base_ms, 2),
        # The same, pair by pair: less sensitive to load that changes across the run.
        "median_pair_ratio": round(statistics.median(c / b for c, b in zip(cmd, base, strict=True)), 2),
        "min_ms": round(min(cmd) * 1000, 1),
        "baseline_min_ms": round(min(base) * 1000, 1),
    }


def importtime(argv: list[str], env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """The modules with the most import time of their own (ms), from one -X importtime run."""
    if argv[0] != sys.executable:
        argv = [sys.executable, "-m", "fetchml", *argv[1:]]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], env=env, cwd=REPO, capture_output=True, text=True
    )
    own: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = line[len("import time:") :].split("|")
            own.append((name.strip(), int(self_us) / 1000))
    return sorted(own, key=lambda kv: -kv[1])[:top]


def _seed(server: ServerHandle, key: str, count: int) -> None:
    import httpx

    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as http:
        for i in range(count):
            body = {"job_name": f"bench-{i}", "entrypoint": "train.py", "priority": 1 + i % 10}
            http.post("/v1/tasks", json=body).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="pairs per command (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured runs of each first (default 2)")
    ap.add_argument(
        "--tasks", type=int, default=20, help="tasks on the server for `fetchml tasks` (default 20)"
    )
    ap.add_argument("--max-ratio", type=float, default=3.0, help="the goal, for the exit status (default 3)")
    ap.add_argument("--explain", action="store_true", help="also list each command's costliest imports")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    fetchml = fetchml_command()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fetchml-bench-cli-") as tmp:
        # No user config, no inherited FETCHML_*; a wide "terminal" as when piped.
        env = base_env(FETCHML_CONFIG=str(Path(tmp) / "absent.toml"))
        for name, extra in (("fetchml --help", ["--help"]), ("fetchml tasks --help", ["tasks", "--help"])):
            results[name] = paired([*fetchml, *extra], env, args.rounds, args.warmup)
            if args.explain:
                results[name]["imports"] = importtime([*fetchml, *extra], env)
        server = ServerHandle(
            data_dir=Path(tmp) / "server",
            env_extra={"FETCHML_LOG_LEVEL": "warning", "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000"},
        )
        key = server.make_key("bench", "user")
        server.start()
        try:
            _seed(server, key, args.tasks)
            client_env = {**env, "FETCHML_SERVER_URL": server.url, "FETCHML_API_KEY": key}
            results["fetchml tasks"] = paired([*fetchml, "tasks"], client_env, args.rounds, args.warmup)
            if args.explain:
                results["fetchml tasks"]["imports"] = importtime([*fetchml, "tasks"], client_env)
        finally:
            server.stop()

    ok = all(r["ratio"] <= args.max_ratio for r in results.values())
    if args.json:
        print(json.dumps({"rounds": args.rounds, "max_ratio": args.max_ratio, "ok": ok, "commands": results}))
        return 0 if ok else 1
    print(f"bench/cli  rounds={args.rounds} (paired with `python -c pass`)  cpus={os.cpu_count()}")
    print(f"  {'command':<22} {'median':>9} {'python -c pass':>15} {'ratio':>7}  goal <= {args.max_ratio:g}x")
    for name, r in results.items():
        mark = "ok" if r["ratio"] <= args.max_ratio else "OVER"
        print(
            f"  {name:<22} {r['median_ms']:>6.1f} ms {r['baseline_median_ms']:>12.1f} ms "
            f"{r['ratio']:>6.2f}x  {mark}  (pairwise {r['median_pair_ratio']:.2f}x)"
        )
        for module, ms in r.get("imports", []):
            print(f"      {ms:7.1f} ms  {module}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
