"""bench/ceiling: the stack's ceiling for task submission, run by bench/submit beside fetchml.

A minimal server on the same stack (Litestar on uvicorn, one process, raw sqlite3 in WAL mode
with synchronous=NORMAL) that does per request what a submission must: look up the API key,
validate the body (msgspec), and insert a task row and a hash-chained audit row in one
transaction, answering 201 only after the commit. Nothing else: no access log, no trace ids, no
error envelope, no events. fetchml's throughput over this one's, in the same run, says how much
of the stack's speed the product's own work costs.

    python -m bench.ceiling --port 9300 --db /tmp/ceiling.db     # serve (bench/submit starts it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from typing import Annotated

import msgspec
from litestar import Litestar, Request, post
from litestar.exceptions import NotAuthorizedException

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (hash TEXT PRIMARY KEY, user_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, job_name TEXT NOT NULL, user_id TEXT NOT NULL,
    entrypoint TEXT, args TEXT, priority INTEGER NOT NULL, cpu INTEGER NOT NULL,
    memory_gb INTEGER NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS ix_tasks_seq ON tasks (seq);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
"""


class TaskIn(msgspec.Struct, forbid_unknown_fields=True):
    job_name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    entrypoint: str | None = None
    args: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    cpu: Annotated[int, msgspec.Meta(ge=0)] = 1
    memory_gb: Annotated[int, msgspec.Meta(ge=0)] = 1


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_app(path: str) -> Litestar:
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(path)
        return conn

    @post("/v1/tasks", status_code=201, sync_to_thread=True)
    def submit(request: Request, data: TaskIn) -> dict[str, object]:  # type: ignore[type-arg]
        conn = db()
        row = conn.execute(
            "SELECT user_id FROM keys WHERE hash = ?", (key_hash(request.headers.get("x-api-key", "")),)
        ).fetchone()
        if row is None:
            raise NotAuthorizedException()
        user, now, task_id = row[0], time.time(), uuid.uuid4().hex
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM tasks").fetchone()[0]
            conn.execute(
                "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (task_id, seq, data.job_name, user, data.entrypoint, data.args, data.priority, data.cpu, data.memory_gb, "queued", now),
            )  # fmt: skip
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            aseq, prev = (last[0] + 1, last[1]) if last else (1, "0" * 64)
            body = json.dumps(
                {"type": "task_submitted", "task": task_id, "user": user, "at": now}, sort_keys=True
            )
            digest = hashlib.sha256((prev + body).encode()).hexdigest()
            conn.execute("INSERT INTO audit VALUES (?,?,?,?)", (aseq, body, prev, digest))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {"id": task_id, "status": "queued", "job_name": data.job_name, "priority": data.priority}

    return Litestar(route_handlers=[submit], debug=False)


def prepare(path: str, keys: dict[str, str]) -> None:
    """A fresh database with these keys (key -> user)."""
    conn = connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?)", [(key_hash(k), u) for k, u in keys.items()])
    conn.close()


def count(path: str) -> tuple[int, bool]:
    """The tasks stored, and whether the audit chain verifies."""
    conn = connect(path)
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    prev, ok = "0" * 64, True
    for body, p, h in conn.execute("SELECT body, prev, hash FROM audit ORDER BY seq"):
        ok = ok and p == prev and hashlib.sha256((p + body).encode()).hexdigest() == h
        prev = h
    conn.close()
    return int(tasks), ok


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    args = ap.parse_args()
    uvicorn.run(create_app(args.db), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
