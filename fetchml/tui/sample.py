"""Sample view states, built through the reducer exactly as a server's stream would build them:
the screenshots in docs/tui.md, the TUI's snapshot tests and bench/tui use them (with a fixed
clock, so what they show does not depend on when they run)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fetchml.tui.state import ADMIN, Viewer, ViewState

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def worker(
    wid: str, gpus: int, *, status: str = "active", slots: int | None = None, hb: float = 3.0
) -> dict[str, Any]:
    return {
        "id": wid, "name": wid, "status": status, "connected_at": _iso(NOW - 86_400),
        "last_heartbeat": _iso(NOW - hb),
        "capabilities": {"cpu_cores": 32, "memory_gb": 256, "gpu_count": gpus, "gpu_type": "A100" if gpus else None,
                         "gpus": [{"index": i, "name": "A100", "memory_mb": 81920} for i in range(gpus)],
                         "executor": "docker"},
        "slots": {"batch_total": slots if slots is not None else max(1, gpus), "batch_available": 0,
                  "service_total": 0, "service_available": 0},
        "active_tasks": [],
    }  # fmt: skip


def task(
    tid: str,
    name: str,
    user: str,
    *,
    status: str = "queued",
    prio: int = 5,
    waited: float = 60.0,
    gpu: int = 1,
    worker_id: str | None = None,
    gpus: list[int] | None = None,
    ran: float = 0.0,
    reason: str | None = None,
) -> dict[str, Any]:
    created = NOW - waited
    t: dict[str, Any] = {
        "id": tid, "job_name": name, "status": status, "priority": prio, "created_at": _iso(created),
        "user_id": user, "retry_count": 0, "max_retries": 3, "node_count": 1, "gpu": gpu,
        "priority_aged": min(15.0, prio + waited / 3600.0) if status == "queued" else float(prio),
        "attempt": 0 if status == "queued" else 1, "assigned_gpus": gpus or [], "cancel_requested": False,
        "entrypoint": f"python {name}.py",
    }  # fmt: skip
    if reason:
        t["pending_reason"] = reason
    if worker_id:
        t["worker_id"] = worker_id
        t["node_assignments"] = [
            {"node_id": 0, "worker_id": worker_id, "slot_assigned": True, "gpus": gpus or []}
        ]
        t["started_at"] = _iso(NOW - ran)
    return t


def _tid(n: int) -> str:
    return f"{(n * 2654435761) % (1 << 128):032x}"


def demo_state(viewer: Viewer | None = None) -> ViewState:
    """A small lab: three GPU boxes (one draining, one lost), a queue, running tasks, ended ones
    and a reservation."""
    s = ViewState(viewer or Viewer(ADMIN, "root"), clock=lambda: NOW)
    workers = [
        worker("gpu-box-1", 4),
        worker("gpu-box-2", 2, status="draining", hb=7),
        worker("gpu-box-3", 8, status="offline", hb=600),
    ]
    running = [
        task("3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b", "resnet50-imagenet", "alice", status="running", worker_id="gpu-box-1", gpus=[0, 1], gpu=2, ran=5_432),
        task("8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "bert-finetune", "bob", status="running", worker_id="gpu-box-1", gpus=[2], ran=731),
        task("c0ffee00112233445566778899aabbcc", "eval-sweep-07", "carol", status="collecting", worker_id="gpu-box-2", gpus=[0], ran=3_601),
        task("d15ea5e0d15ea5e0d15ea5e0d15ea5e0", "tokenize-wiki", "alice", status="preparing", worker_id="gpu-box-1", gpus=[3], ran=12),
    ]  # fmt: skip
    queue = [
        task("a1b2c3d4e5f60718293a4b5c6d7e8f90", "llama-7b-lora", "bob", prio=9, waited=1_200, gpu=4, reason="needs 4 GPUs: the largest free block is 0 (gpu-box-1 busy, gpu-box-2 draining)"),
        task("0badc0de0badc0de0badc0de0badc0de", "resnet50-ablation", "alice", prio=5, waited=9_000, reason="waiting for GPUs: 0 of 1 free"),
        task("feedface00000000feedface00000000", "vit-small", "carol", prio=7, waited=300, reason="waiting for GPUs: 0 of 1 free"),
        task("1234abcd1234abcd1234abcd1234abcd", "diffusion-xl", "dave", prio=5, waited=2_400, gpu=8, reason="needs 8 GPUs on one node: no active worker has 8"),
        task("5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e", "eval-sweep-08", "carol", prio=3, waited=60, reason="waiting for GPUs: 0 of 1 free"),
        task("deadbeefdeadbeefdeadbeefdeadbeef", "data-dedup", "erin", prio=2, waited=30, gpu=0, reason="waiting for a batch slot"),
    ]  # fmt: skip
    s.apply("snapshot", {"last_event_id": 4120, "resumed": False, "workers": workers, "queue": queue[:3],
                         "status": {"batch_queue_depth": len(queue), "service_queue_depth": 0}}, 4120)  # fmt: skip
    s.seed(queued=queue, active=running, reservations=[
        {"id": "r-2b662e00efa0", "user_id": "root", "status": "active", "gpu_count": 2, "gpu_type": "A100",
         "node_count": 1, "expires_at": _iso(NOW + 1_500), "created_at": _iso(NOW - 300), "gpus": {"gpu-box-1": [2, 3]}},
        {"id": "r-9d41c07e5b23", "user_id": "root", "status": "expired", "gpu_count": 1, "gpu_type": None,
         "node_count": 1, "expires_at": _iso(NOW - 600), "created_at": _iso(NOW - 4_200)},
    ])  # fmt: skip
    ev = 4120

    def send(event: str, at: float, /, **data: Any) -> None:
        nonlocal ev
        ev += 1
        s.apply(event, {"id": ev, "type": event, "at": _iso(at), **data}, ev)

    for tid, job, user, exit_code, error, ago in [
        ("e4d909c290d0fb1ca068ffaddf22cbd0", "mnist-smoke", "alice", 0, None, 900),
        ("9e107d9d372bb6826bd81d3542a419d6", "bert-finetune-lr3", "bob", 3, "exit code 3", 420),
        ("a3c65c2974270fd093ee8a9bf8ae7d0b", "tmp-debug", "carol", None, "cancelled", 60),
    ]:
        send(
            "task_transition",
            NOW - ago - 700,
            task_id=tid,
            job_name=job,
            user_id=user,
            to="queued",
            priority=5,
            attempt=0,
            retry_count=0,
        )
        if error != "cancelled":
            send(
                "task_transition",
                NOW - ago - 600,
                task_id=tid,
                job_name=job,
                user_id=user,
                to="running",
                priority=5,
                attempt=1,
                retry_count=0,
                worker_id="gpu-box-2",
                nodes=[{"worker_id": "gpu-box-2", "gpus": [1]}],
                **{"from": "queued"},
            )
        end: dict[str, Any] = {"error": error, "cancelled": error == "cancelled"} if error else {}
        if exit_code is not None:
            end["exit_code"] = exit_code
        send("task_transition", NOW - ago, task_id=tid, job_name=job, user_id=user, to="completed" if exit_code == 0 else "failed",
             priority=5, attempt=1, retry_count=0, **end, **{"from": "queued" if error == "cancelled" else "running"})  # fmt: skip
    send(
        "worker_disconnected",
        NOW - 540,
        worker_id="gpu-box-3",
        name="gpu-box-3",
        status="offline",
        reason="heartbeat_lost",
        **{"from": "active"},
    )
    for tid, line in [
        ("3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b", "epoch 31/90  loss 1.214  top1 71.8%  1,942 img/s"),
        ("8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "step 4200/12000  loss 0.3391  lr 2.0e-05"),
        ("c0ffee00112233445566778899aabbcc", "uploading outputs/metrics.json (3 of 5)"),
        ("d15ea5e0d15ea5e0d15ea5e0d15ea5e0", "pulling image ghcr.io/lab/tok:2.1 (412 MB)"),
    ]:
        s.set_last_log(tid, line)
    if not s.viewer.is_admin:
        # Workers and reservations are admin routes: a user key has none of them.
        s.workers.clear()
        s.reservations.clear()
        s.depth = None
        s.versions = {k: v + 1 for k, v in s.versions.items()}
    return s


def service(
    sid: str,
    name: str,
    user: str,
    *,
    status: str = "running",
    worker_id: str | None = None,
    gpus: list[int] | None = None,
    ago: float = 600.0,
    **extra: Any,
) -> dict[str, Any]:
    """A JupyterService as `GET /v1/jupyter/services` lists it."""
    s: dict[str, Any] = {
        "id": sid, "name": name, "status": status, "created_at": _iso(NOW - ago), "user_id": user,
        "workspace": name, "image": "jupyter/pytorch:latest", "gpu": len(gpus or []), "gpus": gpus or [],
        "idle_timeout_minutes": 120, "proxy_path": f"/v1/jupyter/services/{sid}/proxy/", **extra,
    }  # fmt: skip
    if worker_id:
        s["worker_id"] = worker_id
    if status == "running" and worker_id:
        s["url"] = f"http://{worker_id}:8890/v1/jupyter/services/{sid}/proxy/"
        s["started_at"] = _iso(NOW - ago + 40)
    return s


def demo_services(viewer: Viewer | None = None) -> list[dict[str, Any]]:
    """Jupyter services for the Services pane: running, queued, one that failed (a user key
    lists its own only)."""
    items = [
        service("5e7c1a0b9d2f4e6a8b1c3d5e7f9a0b2c", "alice-scratch", "alice", worker_id="gpu-box-1", gpus=[1], ago=3_720),
        service("a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5", "bob-explore", "bob", status="starting", ago=95,
                pending_reason="waiting for a service slot: no active worker has 2 free GPUs"),
        service("f00dfeedf00dfeedf00dfeedf00dfeed", "carol-eda", "carol", status="error", worker_id="gpu-box-2", ago=1_800,
                ended_at=_iso(NOW - 1_750), error="jupyter exited with code 1 before it answered",
                log_tail=["[E] No module named 'jupyter_server'"]),
    ]  # fmt: skip
    if viewer is not None and not viewer.is_admin:
        items = [s for s in items if s["user_id"] == viewer.user_id]
    return items


def scale_state(queued: int = 10_000, workers: int = 100, gpus: int = 8) -> ViewState:
    """A big cluster for bench/tui: `workers` full GPU boxes and `queued` tasks waiting."""
    s = ViewState(Viewer(ADMIN, "root"), clock=lambda: NOW)
    ws = [worker(f"node-{i:03d}", gpus) for i in range(workers)]
    s.apply("snapshot", {"last_event_id": 1, "resumed": False, "workers": ws, "queue": [],
                         "status": {"batch_queue_depth": queued, "service_queue_depth": 0}}, 1)  # fmt: skip
    users = ("alice", "bob", "carol", "dave", "erin", "frank")
    running = [
        task(_tid(10_000_000 + i), f"job-{i}", users[i % len(users)], status="running",
             worker_id=f"node-{i // gpus:03d}", gpus=[i % gpus], ran=60.0 + i)
        for i in range(workers * gpus)
    ]  # fmt: skip
    waiting = [
        task(_tid(i), f"sweep-{i % 97}-{i}", users[i % len(users)], prio=1 + i % 10, waited=36_000 - i * 3.0,
             reason="waiting for GPUs: 0 of 1 free")
        for i in range(queued)
    ]  # fmt: skip
    s.seed(queued=waiting, active=running, reservations=[])
    return s
