"""bench/submit: concurrent clients POST /v1/tasks to a real fetchml server on loopback.

Prints accepted tasks/s and p50/p99 latency, then the same load against bench/ceiling (a minimal
server on the same stack, bench/ceiling.py) and fetchml's share of that ceiling. Both servers run
side by side and the load alternates between them in rounds (`--rounds`), so a slow stretch of a
shared machine slows both alike. The server is a separate process with its
SQLite database in a temporary directory; every accepted task is durably committed with
its audit event before its 201 is sent. Afterwards the bench checks that the server holds
exactly the accepted tasks and that the audit chain verifies.

    python -m bench.submit --concurrency 32 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import LoadResult, cpu_seconds, post_json, run_load
from tests.harness import ServerHandle, free_port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive connections")
    ap.add_argument("--requests", type=int, default=20000, help="total POSTs (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1000, help="POSTs sent first and not measured")
    ap.add_argument("--time-limit", type=float, default=120.0, help="stop after this many seconds regardless")
    ap.add_argument(
        "--access-log", choices=["on", "off"], default="on", help="server access log (default on)"
    )
    ap.add_argument(
        "--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite synchronous mode"
    )
    ap.add_argument(
        "--rounds", type=int, default=4, help="alternate the servers this many times (requests split evenly)"
    )
    ap.add_argument("--no-ceiling", action="store_true", help="skip the same load against bench/ceiling")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fetchml-bench-") as tmp, contextlib.ExitStack() as stack:
        server = ServerHandle(
            data_dir=Path(tmp),
            env_extra={
                # The per-key limit would otherwise cap one client at 10 requests/s.
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000",
                "FETCHML_ACCESS_LOG": "true" if args.access_log == "on" else "false",
                "FETCHML_LOG_LEVEL": "warning",
                "FETCHML_SQLITE_SYNCHRONOUS": args.synchronous,
                "FETCHML_CLOCK_OFFSET_FILE": "",  # the real clock, as in production
            },
        )
        key = server.make_key("bench", "user")
        admin = server.make_key("bench-admin", "admin")
        server.start()
        stack.callback(server.stop)
        targets = [_Target("fetchml", server.port, key, server.proc.pid)]
        ceiling_db = str(Path(tmp) / "ceiling.db")
        if not args.no_ceiling:
            targets.append(stack.enter_context(_ceiling(ceiling_db)))
        for t in targets:
            _warm(t, args)
        # Rounds alternate between the servers, so a slower stretch of a shared machine (its
        # neighbours, its host) falls on both rather than on whichever ran then.
        rounds = max(1, args.rounds)
        for r in range(rounds):
            share = args.requests // rounds + (1 if r < args.requests % rounds else 0)
            for t in targets:
                t.add(_load(t, share, args))
        res = targets[0].result
        with httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=120) as http:
            stored = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
            verify = http.post("/v1/audit/verify").json()
        stack.close()
        # The access log is part of what is measured: every accepted request wrote its line.
        access_lines = server.log().count(" fetchml.access ") if args.access_log == "on" else 0
        ceiling = None
        if not args.no_ceiling:
            from bench import ceiling as ceiling_app

            c_stored, c_valid = ceiling_app.count(ceiling_db)
            ceiling = {
                **_summary(targets[1].result, args.concurrency),
                "tasks_stored": c_stored,
                "audit_chain_valid": c_valid,
            }

    summary = _summary(res, args.concurrency)
    summary.update(
        tasks_stored=stored,
        audit_chain_valid=verify["valid"],
        audit_events=verify["total_events"],
        access_log_lines=access_lines,
    )
    ok = not summary["non_201"] and verify["valid"]
    if args.access_log == "on":
        # warm-up + measured + the two reads above, at least
        ok = ok and access_lines >= args.warmup + summary["accepted"]
    if ceiling is not None:
        summary["ceiling"] = ceiling
        summary["share_of_ceiling"] = round(
            summary["accepted_per_s"] / max(ceiling["accepted_per_s"], 1e-9), 2
        )
        summary["share_per_round"] = [
            round(a / max(b, 1e-9), 2) for a, b in zip(targets[0].rates, targets[1].rates, strict=True)
        ]
        ok = ok and not ceiling["non_201"] and ceiling["audit_chain_valid"]
    if args.json:
        print(json.dumps(summary))
        return 0 if ok else 1
    print(
        f"bench/submit  concurrency={args.concurrency}  requests={summary['requests']}  "
        f"access_log={args.access_log}  synchronous={args.synchronous}  rounds={rounds}"
    )
    print(
        f"  accepted tasks/s : {summary['accepted_per_s']}   (server CPU {summary['server_cpu_ms']} ms/request)"
    )
    print(f"  latency p50      : {summary['p50_ms']} ms")
    print(
        f"  latency p99      : {summary['p99_ms']} ms   (p90 {summary['p90_ms']} ms, max {summary['max_ms']} ms)"
    )
    print(f"  non-201 answers  : {summary['non_201'] or 'none'}")
    if args.access_log == "on":
        print(f"  access log lines : {access_lines} (every request's line written)")
    print(
        f"  stored tasks     : {stored} (warm-up included)   audit chain valid: {verify['valid']} "
        f"({verify['total_events']} events)"
    )
    if ceiling is not None:
        print("bench/ceiling (Litestar + raw sqlite3, WAL, synchronous=NORMAL; bench/ceiling.py), same load")
        print(
            f"  accepted tasks/s : {ceiling['accepted_per_s']}   (server CPU {ceiling['server_cpu_ms']} ms/request)"
        )
        print(f"  latency p50/p99  : {ceiling['p50_ms']} / {ceiling['p99_ms']} ms")
        print(
            f"  stored tasks     : {ceiling['tasks_stored']}   audit chain valid: {ceiling['audit_chain_valid']}"
        )
        print(
            f"fetchml / ceiling  : {summary['share_of_ceiling']}x   "
            f"(round by round: {', '.join(f'{x}x' for x in summary['share_per_round'])})"
        )
    return 0 if ok else 1


def _request(host: str, port: int, key: str) -> Callable[[int], bytes]:
    def request(i: int) -> bytes:
        return post_json(
            "/v1/tasks",
            host,
            port,
            key,
            {
                "job_name": f"bench-{i % 100}",
                "entrypoint": "train.py",
                "priority": 1 + i % 10,
                "args": "--epochs 1",
                "cpu": 1,
                "memory_gb": 1,
            },
        )

    return request


@dataclass
class _Target:
    """A server under load, and what its rounds measured, joined."""

    name: str
    port: int
    key: str
    pid: int
    result: LoadResult = field(default_factory=LoadResult)
    rates: list[float] = field(default_factory=list)  # accepted/s of each round

    def add(self, res: LoadResult) -> None:
        self.result.latencies += res.latencies
        for status, n in res.statuses.items():
            self.result.statuses[status] = self.result.statuses.get(status, 0) + n
        self.result.elapsed += res.elapsed
        self.result.server_cpu += res.server_cpu
        self.rates.append(res.ok(201) / res.elapsed if res.elapsed else 0.0)


def _warm(t: _Target, args: argparse.Namespace) -> None:
    request = _request("127.0.0.1", t.port, t.key)
    asyncio.run(
        run_load("127.0.0.1", t.port, request, concurrency=args.concurrency, total=args.warmup, time_limit=30)
    )


def _load(t: _Target, total: int, args: argparse.Namespace) -> LoadResult:
    request = _request("127.0.0.1", t.port, t.key)
    cpu = cpu_seconds(t.pid)
    res = asyncio.run(
        run_load(
            "127.0.0.1",
            t.port,
            request,
            concurrency=args.concurrency,
            total=total,
            time_limit=args.time_limit,
        )
    )
    res.server_cpu = cpu_seconds(t.pid) - cpu
    return res


def _summary(res: LoadResult, concurrency: int) -> dict[str, Any]:
    accepted = res.ok(201)
    return {
        "concurrency": concurrency,
        "accepted": accepted,
        "non_201": {str(k): v for k, v in res.statuses.items() if k != 201},
        "accepted_per_s": round(accepted / res.elapsed, 1) if res.elapsed else 0.0,
        # The server's own CPU per request: steadier from run to run than the rate.
        "server_cpu_ms": round(res.server_cpu * 1000 / max(accepted, 1), 3),
        **res.summary(),
    }


@contextlib.contextmanager
def _ceiling(db: str) -> Iterator[_Target]:
    """bench/ceiling, a minimal server on the same stack, running until the block ends."""
    from bench import ceiling

    key = "ceiling-bench-key"
    ceiling.prepare(db, {key: "bench"})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--db", db],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/tasks", json={}, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("bench/ceiling did not start") from None
                time.sleep(0.1)
        yield _Target("ceiling", port, key, proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    sys.exit(main())
