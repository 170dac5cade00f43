"""bench/scale's data: a fetchml SQLite database with N tasks and M audit events, written
straight into the server's schema (migrated by fetchml itself), not through the API.

Spreads: ~50 users (a few heavy, many light), mostly completed/failed tasks with some queued,
running and in-between ones among the newest, priorities 1-10, a few thousand distinct job
names, timestamps over 90 days. The audit events are those the tasks' lives would have written
(job_queued/started/completed) plus file accesses, failed logins and our extended types,
interleaved in time and chained with fetchml's own hashing, so `POST /v1/audit/verify` passes
on the result (checkpoints are left to the server, which signs the head once it runs).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fetchml.core.audit import GENESIS_HASH, event_hash, fast_canonical, fast_event_hash
from fetchml.core.timeutil import rfc3339

SPAN = timedelta(days=90)
USERS = [f"user{i:02d}" for i in range(50)]
# Zipf-like: user00 submits ~10x what user49 does.
USER_WEIGHTS = [1 / (i + 1) ** 0.6 for i in range(len(USERS))]
FAMILIES = ["resnet", "bert", "gpt", "vit", "unet", "lstm", "xgb", "diffusion", "whisper", "t5"]
PRIORITY_WEIGHTS = [3, 4, 6, 8, 30, 12, 10, 8, 5, 4]  # 1..10, most at the default 5
# (status, share) of the newest 3% (the rest are finished: 74% completed, 26% failed): a queue
# of ~1,500 and a few hundred tasks on workers, as a cluster of a few hundred GPUs would hold.
RECENT_STATUSES = [
    ("queued", 55),
    ("running", 8),
    ("preparing", 2),
    ("collecting", 1),
    ("completed", 25),
    ("failed", 9),
]
# Audit events beside the tasks' own, by weight (the tasks' job_* events come first).
OTHER_EVENTS: list[tuple[str, str, int]] = [
    ("file_access", "download", 560),
    ("auth_attempt", "authenticate", 300),
    ("priority_changed", "set_priority", 40),
    ("job_cancelled", "cancel", 20),
    ("reservation_created", "create", 20),
    ("reservation_expired", "expire", 15),
    ("jupyter_started", "start", 10),
    ("jupyter_stopped", "stop", 9),
    ("key_created", "create", 2),
    ("audit_verified", "verify", 2),
    ("experiment_created", "create", 4),
    ("plugin_configured", "configure", 1),
    ("scheduler_drain", "drain", 1),
]
SQL_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime on SQLite


def _ts(dt: datetime) -> str:
    return dt.strftime(SQL_TS)


def _column_defaults(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _tasks(
    rng: random.Random, n: int, anchor: datetime
) -> tuple[list[dict[str, Any]], list[tuple[datetime, str, dict[str, Any]]]]:
    """The task rows (oldest first) and the audit events their lives wrote (unordered)."""
    start = anchor - SPAN
    step = SPAN / max(n, 1)
    recent_from = int(n * 0.97)
    statuses = [s for s, _ in RECENT_STATUSES]
    status_weights = [w for _, w in RECENT_STATUSES]
    rows: list[dict[str, Any]] = []
    events: list[tuple[datetime, str, dict[str, Any]]] = []
    for i in range(n):
        created = start + step * i + timedelta(microseconds=rng.randrange(0, 1000))
        user = rng.choices(USERS, USER_WEIGHTS)[0]
        if i >= recent_from:
            status = rng.choices(statuses, status_weights)[0]
        else:
            status = "completed" if rng.random() < 0.74 else "failed"
        priority = rng.choices(range(1, 11), PRIORITY_WEIGHTS)[0]
        job = f"{rng.choice(FAMILIES)}-{rng.randrange(400):03d}"
        tid = f"{rng.getrandbits(128):032x}"
        started = created + timedelta(seconds=rng.randrange(5, 3600)) if status != "queued" else None
        ended = (
            started + timedelta(seconds=rng.randrange(60, 6 * 3600))
            if started is not None and status in ("completed", "failed")
            else None
        )
        if ended is not None and ended > anchor:
            ended = anchor
        if started is not None and started > anchor:
            started = anchor
        worker = f"worker-{rng.randrange(24):02d}" if started is not None else None
        gpus = rng.choice([0, 0, 1, 1, 2, 4, 8])
        row = {
            "id": tid,
            "job_name": job,
            "status": status,
            "priority": priority,
            "created_at": _ts(created),
            "started_at": _ts(started) if started else None,
            "ended_at": _ts(ended) if ended else None,
            "worker_id": worker,
            "error": "exit code 1: CUDA out of memory" if status == "failed" else None,
            "output": f"final loss {rng.random():.4f}" if status == "completed" else None,
            "entrypoint": "train.py",
            "args": f"--lr {rng.choice(['1e-3', '3e-4', '1e-4'])} --epochs {rng.randrange(1, 100)}",
            "datasets": json.dumps([f"ds-{rng.randrange(200)}"]),
            "dataset_specs": "[]",
            "cpu": rng.choice([2, 4, 8, 16]),
            "memory_gb": rng.choice([8, 16, 32, 64]),
            "gpu": gpus,
            "gpu_type": "a100" if gpus else None,
            "user_id": user,
            "max_retries": 3,
            "metadata": json.dumps({"team": f"team-{USERS.index(user) % 7}"}),
            "plugin_configs": "{}",
            "plugin_status": "{}",
            "node_assignments": json.dumps(
                [
                    {
                        "node_id": 0,
                        "worker_id": worker,
                        "slot_assigned": True,
                        "gpus": list(range(gpus)),
                        "status": status,
                    }
                ]
                if worker
                else []
            ),
            "attempt": 1 if started else 0,
            # Far ahead: the bench's server has no workers, and must not expire these while it runs.
            "lease_expires_at": _ts(anchor + timedelta(days=3650))
            if status in ("preparing", "running", "collecting")
            else None,
            "assigned_gpus": json.dumps(list(range(gpus)) if worker else []),
            "exit_code": (0 if status == "completed" else 1) if ended else None,
        }
        rows.append(row)
        res = f"task:{tid}"
        ip = f"10.1.{USERS.index(user)}.{rng.randrange(1, 255)}"
        events.append(
            (
                created,
                "job_queued",
                {
                    "user_id": user,
                    "resource": res,
                    "action": "submit",
                    "ip_address": ip,
                    "metadata": {"job_name": job, "priority": priority},
                },
            )
        )
        if started is not None:
            events.append(
                (
                    started,
                    "job_started",
                    {
                        "user_id": user,
                        "resource": res,
                        "action": "start",
                        "metadata": {"worker_id": worker, "attempt": 1},
                    },
                )
            )
        if ended is not None:
            ok = status == "completed"
            events.append(
                (
                    ended,
                    "job_completed",
                    {
                        "user_id": user,
                        "resource": res,
                        "action": "complete" if ok else "fail",
                        "success": ok,
                        "error": None if ok else row["error"],
                        "metadata": {"attempt": 1, "exit_code": row["exit_code"]},
                    },
                )
            )
    return rows, events


def _other_events(
    rng: random.Random, n: int, anchor: datetime, task_ids: list[str]
) -> list[tuple[datetime, str, dict[str, Any]]]:
    start = anchor - SPAN
    span_us = int(SPAN.total_seconds() * 1e6)
    weights = [w for _, _, w in OTHER_EVENTS]
    out: list[tuple[datetime, str, dict[str, Any]]] = []
    for _ in range(n):
        etype, action, _ = rng.choices(OTHER_EVENTS, weights)[0]
        when = start + timedelta(microseconds=rng.randrange(span_us))
        user: str | None = rng.choices(USERS, USER_WEIGHTS)[0]
        fields: dict[str, Any] = {
            "action": action,
            "ip_address": f"10.2.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        }
        tid = rng.choice(task_ids) if task_ids else "0" * 32
        if etype == "file_access":
            fields |= {
                "resource": f"task:{tid}/artifact:out/model-{rng.randrange(50)}.pt",
                "metadata": {"attempt": 1, "size": rng.randrange(1, 10**9)},
            }
        elif etype == "auth_attempt":
            user = user if rng.random() < 0.7 else None
            fields |= {"resource": "api", "success": False, "error": "revoked key" if user else "unknown key"}
        elif etype in ("priority_changed", "job_cancelled"):
            fields |= {"resource": f"task:{tid}", "metadata": {"owner": user}}
        else:
            fields |= {"resource": f"{etype.split('_')[0]}:{rng.getrandbits(64):016x}"}
        fields["user_id"] = user
        out.append((when, etype, fields))
    return out


def build(db_path: Path, n_tasks: int, n_events: int, seed: int = 15) -> dict[str, Any]:
    """Creates the database at db_path (migrated by fetchml, then filled). Returns its facts:
    the anchor (newest timestamp), sizes, and how long the build took."""
    from fetchml.store.db import Database

    t0 = time.perf_counter()
    db = Database(f"sqlite:///{db_path}")
    db.migrate()
    db.dispose()
    rng = random.Random(seed)
    anchor = datetime.now(UTC).replace(microsecond=0)
    tasks, task_events = _tasks(rng, n_tasks, anchor)
    task_events = task_events[:n_events]
    others = _other_events(rng, n_events - len(task_events), anchor, [t["id"] for t in tasks])
    events = task_events + others
    events.sort(key=lambda e: e[0])  # the chain's order is its timestamps' order, as the server writes it

    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    columns = _column_defaults(conn, "tasks")
    names = [c for c in columns if c != "seq"]
    # Columns this bench does not know (added by a later migration) take their defaults.
    known = [c for c in names if c in tasks[0]] if tasks else names
    conn.execute("BEGIN")
    if tasks:
        conn.executemany(
            f"INSERT INTO tasks ({', '.join(known)}, retry_count, node_count, cancel_requested) "
            f"VALUES ({', '.join('?' * len(known))}, 0, 1, 0)",
            ([t[c] for c in known] for t in tasks),
        )
    conn.execute(
        "INSERT INTO queue_counts (priority, queued) SELECT priority, count(*) FROM tasks "
        "WHERE status = 'queued' GROUP BY priority"
    )
    prev = GENESIS_HASH
    batch: list[tuple[Any, ...]] = []
    insert = (
        "INSERT INTO audit_events (sequence_num, timestamp, event_type, user_id, resource, action, "
        "success, ip_address, error, metadata, prev_hash, event_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for seq, (when, etype, f) in enumerate(events, start=1):
        meta = f.get("metadata") or {}
        vals = (
            f.get("user_id"),
            f.get("resource"),
            f.get("action"),
            f.get("success", True),
            f.get("ip_address"),
            f.get("error"),
        )
        canon = fast_canonical(seq, rfc3339(when), etype, *vals, meta)
        digest = fast_event_hash(prev, canon)
        if seq % 9973 == 1:  # the fast encoder agrees with the reference, byte for byte
            ref = dict(
                zip(("user_id", "resource", "action", "success", "ip_address", "error"), vals, strict=True)
            )
            assert (
                event_hash(
                    prev,
                    {**ref, "sequence_num": seq, "timestamp": when, "event_type": etype, "metadata": meta},
                )
                == digest
            )
        batch.append((seq, _ts(when), etype, *vals, json.dumps(meta), prev, digest))
        prev = digest
        if len(batch) >= 50_000:
            conn.executemany(insert, batch)
            batch.clear()
    if batch:
        conn.executemany(insert, batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "tasks": n_tasks,
        "events": len(events),
        "anchor": anchor.isoformat(),
        "build_s": round(time.perf_counter() - t0, 1),
        "users": USERS,
    }
