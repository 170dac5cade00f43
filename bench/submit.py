"""bench/submit: concurrent clients POST /v1/tasks to a real fetchml server on loopback.

Prints accepted tasks/s and p50/p99 latency. The server is a separate process with its
SQLite database in a temporary directory; every accepted task is durably committed with
its audit event before its 201 is sent. Afterwards the bench checks that the server holds
exactly the accepted tasks and that the audit chain verifies.

    python -m bench.submit --concurrency 32 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import post_json, run_load
from tests.harness import ServerHandle


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
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fetchml-bench-") as tmp:
        server = ServerHandle(
            data_dir=Path(tmp),
            env_extra={
                # The per-key limit would otherwise cap one client at 10 requests/s.
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000",
                "FETCHML_ACCESS_LOG": "true" if args.access_log == "on" else "false",
                "FETCHML_LOG_LEVEL": "warning",
                "FETCHML_SQLITE_SYNCHRONOUS": args.synchronous,
            },
        )
        key = server.make_key("bench", "user")
        admin = server.make_key("bench-admin", "admin")
        server.start()
        try:
            host, port = "127.0.0.1", server.port

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

            asyncio.run(
                run_load(host, port, request, concurrency=args.concurrency, total=args.warmup, time_limit=30)
            )
            res = asyncio.run(
                run_load(
                    host,
                    port,
                    request,
                    concurrency=args.concurrency,
                    total=args.requests,
                    time_limit=args.time_limit,
                )
            )
            accepted = res.ok(201)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=120) as http:
                stored = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
                verify = http.post("/v1/audit/verify").json()
        finally:
            server.stop()

    summary = {
        "concurrency": args.concurrency,
        "accepted": accepted,
        "non_201": {str(k): v for k, v in res.statuses.items() if k != 201},
        "accepted_per_s": round(accepted / res.elapsed, 1),
        **res.summary(),
        "tasks_stored": stored,
        "audit_chain_valid": verify["valid"],
        "audit_events": verify["total_events"],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"bench/submit  concurrency={args.concurrency}  requests={summary['requests']}  access_log={args.access_log}"
        )
        print(f"  accepted tasks/s : {summary['accepted_per_s']}")
        print(f"  latency p50      : {summary['p50_ms']} ms")
        print(
            f"  latency p99      : {summary['p99_ms']} ms   (p90 {summary['p90_ms']} ms, max {summary['max_ms']} ms)"
        )
        print(f"  non-201 answers  : {summary['non_201'] or 'none'}")
        print(
            f"  stored tasks     : {stored} (warm-up included)   audit chain valid: {verify['valid']} ({verify['total_events']} events)"
        )
    return 0 if not summary["non_201"] and verify["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
