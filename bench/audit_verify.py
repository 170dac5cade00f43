"""bench/audit_verify: verify a 1,000,000-event audit chain online and offline.

Builds the chain directly (not through the API): events hashed with fetchml's own hashing
(the fast encoder, checked byte for byte against the reference on a sample), bulk-inserted
into a fresh SQLite database with the server's schema, and written as an export file with a
signed checkpoint every 1,000 events. Then:

- online: a real `fetchml serve` on that database answers POST /v1/audit/verify (the chain and
  its checkpoints, read with raw cursors and checked by worker processes);
- offline: `fetchml audit verify --file ... --public-key ...` in a subprocess (interpreter start
  included), with no server.

Each side verifies `--repeat` times (default 3; every run is printed) and is judged on the
median. Prints events/s for each; the target is >= 300,000 events/s for both.

    python -m bench.audit_verify --events 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fetchml.core.audit import (
    GENESIS_HASH,
    event_hash,
    fast_canonical,
    fast_event_hash,
    key_id_of,
    public_key_pem,
    sign_checkpoint,
)
from fetchml.core.timeutil import rfc3339
from fetchml.host.auditfile import checkpoint_line, header_line
from fetchml.store.db import Database
from tests.harness import ServerHandle

TYPES = ("job_queued", "job_started", "job_completed", "job_cancelled", "file_access", "auth_attempt")
INSERT = (
    "INSERT INTO audit_events (sequence_num, timestamp, event_type, user_id, resource, action, success, "
    "ip_address, error, metadata, prev_hash, event_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


def build(db_path: Path, export: Path, n: int, every: int, key: Ed25519PrivateKey) -> float:
    """Write n chained events to the database and the export file; returns seconds taken."""
    t0 = time.perf_counter()
    db = Database(f"sqlite:///{db_path}")
    db.migrate()
    db.dispose()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous=OFF")
    key_id = key_id_of(key.public_key())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS_HASH
    batch: list[tuple[object, ...]] = []
    with open(export, "wb") as out:
        out.write(header_line(start))
        for seq in range(1, n + 1):
            when = start + timedelta(microseconds=seq * 1013)
            ts = rfc3339(when)
            etype = TYPES[seq % len(TYPES)]
            user = f"user{seq % 97}"
            resource = f"task:{seq * 2654435761 % 2**64:016x}"
            ok = seq % 13 != 0
            ip = f"10.0.{seq % 256}.{seq % 199}"
            error = None if ok else "exit code 1 — ошибка"
            meta = {"job_name": f"job-{seq % 1000}", "priority": seq % 10, "gpus": [seq % 4], "note": "ünï"}
            canon = fast_canonical(seq, ts, etype, user, resource, etype[4:], ok, ip, error, meta)
            digest = fast_event_hash(prev, canon)
            if seq % 997 == 1:  # the fast encoder must agree with the reference, byte for byte
                fields = {
                    "sequence_num": seq,
                    "timestamp": when,
                    "event_type": etype,
                    "user_id": user,
                    "resource": resource,
                    "action": etype[4:],
                    "success": ok,
                    "ip_address": ip,
                    "error": error,
                    "metadata": meta,
                }
                assert event_hash(prev, fields) == digest, seq
            meta_text = json.dumps(meta)
            batch.append(
                (
                    seq,
                    when.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    etype,
                    user,
                    resource,
                    etype[4:],
                    ok,
                    ip,
                    error,
                    meta_text,
                    prev,
                    digest,
                )
            )
            out.write(canon[:-1] + b',"kind":"event","prev_hash":"' + prev.encode())
            out.write(b'","event_hash":"' + digest.encode() + b'"}\n')
            if seq % every == 0:
                sig = sign_checkpoint(key, seq, digest, when)
                out.write(
                    checkpoint_line(
                        {
                            "sequence_num": seq,
                            "root": digest,
                            "created_at": when,
                            "key_id": key_id,
                            "signature": sig,
                        }
                    )
                )
            prev = digest
            if len(batch) >= 50_000:
                conn.executemany(INSERT, batch)
                batch.clear()
        if batch:
            conn.executemany(INSERT, batch)
    conn.commit()
    conn.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="chain length")
    ap.add_argument("--checkpoint-every", type=int, default=1000, help="events per signed checkpoint")
    ap.add_argument("--target", type=float, default=300_000, help="events/s each side must reach")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--dir", default=None, help="where the temporary database and export go")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="verifications per side; the median is judged, every run printed",
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fetchml-bench-audit-", dir=args.dir) as tmp:
        data = Path(tmp)
        data.chmod(0o700)
        export = data / "audit.jsonl"
        key = Ed25519PrivateKey.generate()
        pub = data / "audit.pub"
        pub.write_text(public_key_pem(key.public_key()))
        build_s = build(data / "fetchml.db", export, args.events, args.checkpoint_every, key)

        # Offline: the CLI, as an operator runs it, interpreter start included.
        env = dict(os.environ, FETCHML_CONFIG=str(data / "client.toml"))
        verify_args = ["--file", str(export), "--public-key", str(pub)]
        offline_runs: list[float] = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [str(Path(sys.executable).parent / "fetchml"), "audit", "verify", "--json", *verify_args],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            offline_runs.append(time.perf_counter() - t0)
            offline = (
                json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {"error": proc.stderr}
            )
        offline_s = statistics.median(offline_runs)

        # Online: a real server verifying its own database, the server holding the same key.
        (data / "audit-signing-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (data / "audit-signing-key.pem").chmod(0o600)
        conn = sqlite3.connect(data / "fetchml.db")
        # The export's checkpoints go into the database too, as the server would have written them.
        with open(export, "rb") as f:
            cps = [orjson.loads(x) for x in f if x.startswith(b'{"kind":"checkpoint"')]
        conn.executemany(
            "INSERT INTO audit_checkpoints (sequence_num, root, created_at, key_id, signature) VALUES (?,?,?,?,?)",
            [
                (
                    c["sequence_num"],
                    c["root"],
                    c["created_at"][:-1].replace("T", " "),
                    c["key_id"],
                    c["signature"],
                )
                for c in cps
            ],
        )
        conn.commit()
        conn.close()
        server = ServerHandle(
            data_dir=data,
            env_extra={"FETCHML_LOG_LEVEL": "warning", "FETCHML_ACCESS_LOG": "false"},
        )
        admin = server.make_key("bench-admin", "admin")
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=600) as http:
                online_runs: list[float] = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    r = http.post("/v1/audit/verify")
                    online_runs.append(time.perf_counter() - t0)
                    online = r.json()
                online_s = statistics.median(online_runs)
        finally:
            server.stop()

    n = args.events
    summary = {
        "events": n,
        "build_s": round(build_s, 2),
        "online_s": round(online_s, 3),
        "online_events_per_s": round(online.get("total_events", 0) / online_s),
        "online_valid": online.get("valid"),
        "online_checkpoints_verified": online.get("checkpoints_verified"),
        "offline_s": round(offline_s, 3),
        "offline_events_per_s": round(offline.get("total_events", 0) / offline_s),
        "offline_valid": offline.get("valid"),
        "offline_checkpoints_verified": offline.get("checkpoints_verified"),
        "online_runs_s": [round(x, 3) for x in online_runs],
        "offline_runs_s": [round(x, 3) for x in offline_runs],
        "cpus": len(os.sched_getaffinity(0)),
    }
    ok = (
        summary["online_valid"] is True
        and summary["offline_valid"] is True
        and summary["online_events_per_s"] >= args.target
        and summary["offline_events_per_s"] >= args.target
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"bench/audit_verify  events={n}  checkpoint every {args.checkpoint_every}  cpus={summary['cpus']}"
        )
        print(f"  build (not timed below)  : {summary['build_s']} s")
        print(
            f"  online  POST /v1/audit/verify : {summary['online_s']} s = {summary['online_events_per_s']:,} events/s"
            f"  valid={summary['online_valid']} checkpoints={summary['online_checkpoints_verified']}"
        )
        print(
            f"  offline fetchml audit verify  : {summary['offline_s']} s = {summary['offline_events_per_s']:,} events/s"
            f"  valid={summary['offline_valid']} checkpoints={summary['offline_checkpoints_verified']}"
        )
        print(f"  runs (s): online {summary['online_runs_s']}  offline {summary['offline_runs_s']}")
        print(f"  target {args.target:,.0f} events/s (median of {args.repeat}): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
