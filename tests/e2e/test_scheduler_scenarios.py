"""Scheduling scenarios on a real server with several real `fetchml worker --executor local`
processes that declare GPUs (no NVIDIA hardware here: `--gpus N --gpu-type T` stands in for
NVML, behind the same GpuProvider interface)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST_LEASES, Cluster
from tests.harness import ServerPool

SHOW = "sh -c 'echo rank=$FETCHML_NODE_RANK nodes=$FETCHML_NUM_NODES cvd=$CUDA_VISIBLE_DEVICES; sleep {s}'"


def show(seconds: float) -> str:
    return SHOW.format(s=seconds)


def local_worker(c: Cluster, name: str, gpus: int, slots: int = 1, gpu_type: str = "T4") -> None:
    c.start_worker(
        name,
        "--executor",
        "local",
        "--gpus",
        str(gpus),
        "--gpu-type",
        gpu_type,
        "--batch-slots",
        str(slots),
    )


@pytest.fixture
def aging_cluster(server_pool: ServerPool, tmp_path: Path) -> Iterator[Cluster]:
    """A server with the default aging (one priority point an hour, up to 15), whose clock the
    test moves forward instead of waiting."""
    server = server_pool.handle(tmp_path / "server", dict(FAST_LEASES))
    server.start()
    c = Cluster(server, tmp_path, server.make_key("root", "admin"), server.make_key("alice", "user"))
    try:
        yield c
    finally:
        c.stop()
        server.stop()


def started_order(c: Cluster, ids: list[str]) -> list[str]:
    tasks = [c.wait_status(i, "completed") for i in ids]
    return [t["id"] for t in sorted(tasks, key=lambda t: t["started_at"])]


def test_higher_priority_runs_first_and_equal_priorities_run_fifo(cluster: Cluster) -> None:
    ids = {
        name: cluster.submit(job_name=name, entrypoint="true", priority=p)
        for name, p in [("p3", 3), ("p7a", 7), ("p5", 5), ("p7b", 7), ("p9", 9)]
    }
    local_worker(cluster, "solo", gpus=0, slots=1)
    assert started_order(cluster, list(ids.values())) == [ids[n] for n in ("p9", "p7a", "p7b", "p5", "p3")]


def test_aging_lets_an_old_low_priority_task_overtake(aging_cluster: Cluster) -> None:
    c = aging_cluster
    old = c.submit(job_name="old-p1", entrypoint="true", priority=1)
    # Before any worker registers: no lease or heartbeat is running while time jumps.
    c.server.advance_clock(12 * 3600)  # +12 at 1/h: aged 13 > a fresh 10
    fresh = c.submit(job_name="fresh-p10", entrypoint="true", priority=10)
    queued = {t: c.task(t)["priority_aged"] for t in (old, fresh)}
    assert queued[old] > queued[fresh] >= 10
    local_worker(c, "solo", gpus=0, slots=1)
    assert started_order(c, [old, fresh]) == [old, fresh]
    assert c.task(old)["priority_aged"] == 1  # a task that left the queue shows its own priority


@pytest.mark.slow
def test_gpus_across_workers_are_never_shared_and_cuda_visible_devices_matches(cluster: Cluster) -> None:
    local_worker(cluster, "box-a", gpus=2, slots=4)
    local_worker(cluster, "box-b", gpus=2, slots=4)
    ids = [cluster.submit(entrypoint=show(2), gpu=1) for _ in range(5)]

    def four_running() -> list[dict[str, object]] | None:
        # One look at all five: the queued one is judged in the same look as the running ones
        # (a later look may find the first four done and the fifth running).
        tasks = [cluster.task(i) for i in ids]
        running = [t for t in tasks if t["status"] == "running"]
        queued = [t for t in tasks if t["status"] == "queued"]
        return tasks if len(running) == 4 and len(queued) == 1 else None

    tasks = cluster.wait_for(four_running, what="four tasks running, one queued")
    running = [t for t in tasks if t["status"] == "running"]
    held = sorted((t["worker_id"], g) for t in running for g in t["assigned_gpus"])  # type: ignore[union-attr]
    assert held == [("box-a", 0), ("box-a", 1), ("box-b", 0), ("box-b", 1)]
    [fifth] = [t for t in tasks if t["status"] == "queued"]
    assert fifth["pending_reason"].startswith("needs 1 GPU")
    for i in ids:
        t = cluster.wait_status(i, "completed", timeout=30)
        assert cluster.logs(i)[0] == f"rank=0 nodes=1 cvd={t['assigned_gpus'][0]}"


def test_a_gang_runs_all_nodes_at_once_with_rank_and_master(cluster: Cluster) -> None:
    local_worker(cluster, "node-a", gpus=1)
    local_worker(cluster, "node-b", gpus=1)
    gang = cluster.submit(
        job_name="gang",
        entrypoint="sh -c 'echo rank=$FETCHML_NODE_RANK of $FETCHML_NUM_NODES at $MASTER_ADDR:$MASTER_PORT'",
        gpu=1,
        node_count=2,
    )
    t = cluster.wait_status(gang, "completed")
    nodes = t["node_assignments"]
    assert [n["node_id"] for n in nodes] == [0, 1]
    assert {n["worker_id"] for n in nodes} == {"node-a", "node-b"}
    assert all(n["status"] == "completed" and n["slot_assigned"] and n["gpus"] == [0] for n in nodes)
    line = cluster.logs(gang)[0]  # rank 0 ships the log
    assert line.startswith("rank=0 of 2 at "), line
    port = int(line.rsplit(":", 1)[1])
    assert 29500 <= port < 30500


def test_a_three_node_gang_on_two_workers_stays_queued_and_holds_nothing(cluster: Cluster) -> None:
    local_worker(cluster, "node-a", gpus=1)
    local_worker(cluster, "node-b", gpus=1)
    gang = cluster.submit(job_name="gang3", entrypoint="true", gpu=1, node_count=3)
    small = [cluster.submit(job_name="small", entrypoint="true", gpu=1) for _ in range(2)]
    for s in small:
        cluster.wait_status(s, "completed")
    t = cluster.task(gang)
    assert t["status"] == "queued"
    assert t["node_assignments"] == []
    assert "3 nodes" in t["pending_reason"], t["pending_reason"]


def test_a_failing_node_fails_the_whole_gang_and_stops_the_others(cluster: Cluster) -> None:
    local_worker(cluster, "node-a", gpus=1)
    local_worker(cluster, "node-b", gpus=1)
    gang = cluster.submit(
        job_name="gang-fail",
        entrypoint="sh -c 'if [ $FETCHML_NODE_RANK = 1 ]; then exit 3; fi; sleep 60'",
        gpu=1,
        node_count=2,
        max_retries=0,
    )
    t = cluster.wait_status(gang, "failed", timeout=30)
    assert t["error"].startswith("node 1 ") and "exit code 3" in t["error"], t["error"]
    statuses = sorted(n["status"] for n in t["node_assignments"])
    assert statuses == ["failed", "stopped"]  # rank 0 was stopped, not left running
    # Its GPUs are free again: a one-GPU task runs on each worker.
    after = [cluster.submit(entrypoint="true", gpu=1) for _ in range(2)]
    for a in after:
        cluster.wait_status(a, "completed")


def test_reservations_withhold_capacity_and_release_it_on_expiry(cluster: Cluster) -> None:
    local_worker(cluster, "box", gpus=2, slots=4)
    bob = cluster.server.make_key("bob", "user")
    with cluster.server.http(cluster.admin) as http:
        r = http.post("/v1/scheduler/reservations", json={"gpu_count": 3})
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT", r.text
        r = http.post("/v1/scheduler/reservations", json={"gpu_count": 1, "expires_minutes": 5})
        assert r.status_code == 201, r.text
        res = r.json()
    assert res["status"] == "active" and res["gpus"] == {"box": [0]}
    big = cluster.submit(job_name="needs-both", entrypoint="true", gpu=2)
    one = cluster.submit(job_name="one", entrypoint=show(0), gpu=1)
    assert cluster.logs(cluster.wait_status(one, "completed")["id"])[0].endswith("cvd=1")
    t = cluster.task(big)
    assert t["status"] == "queued" and res["id"] in t["pending_reason"], t["pending_reason"]
    # Someone else's reservation cannot be named; the admin's own task may use it.
    with cluster.server.http(bob) as http:
        r = http.post("/v1/tasks", json={"job_name": "x", "entrypoint": "true", "reservation_id": res["id"]})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", r.text
    with cluster.server.http(cluster.admin) as http:
        r = http.post(
            "/v1/tasks",
            json={"job_name": "in-res", "entrypoint": show(0), "gpu": 1, "reservation_id": res["id"]},
        )
        assert r.status_code == 201, r.text
        mine = r.json()["id"]
    assert cluster.logs(cluster.wait_status(mine, "completed")["id"])[0].endswith("cvd=0")
    with cluster.server.http(cluster.admin) as http:
        listed = http.get("/v1/scheduler/reservations").json()
    assert [(x["id"], x["status"]) for x in listed] == [(res["id"], "claimed")]
    assert cluster.task(big)["status"] == "queued"
    # Expiry (time moved on): the capacity returns to everyone.
    cluster.server.db_exec("UPDATE reservations SET expires_at = created_at")
    cluster.wait_status(big, "completed")
    with cluster.server.http(cluster.admin) as http:
        assert http.get("/v1/scheduler/reservations").json() == []
        expired = http.get("/v1/scheduler/reservations", params={"all": "true"}).json()
        assert [x["status"] for x in expired] == ["expired"]
        kinds = [
            e["event_type"] for e in http.get("/v1/audit/events", params={"limit": 1000, "include_extended": "true"}).json()["events"]
        ]
    assert {"reservation_created", "reservation_claimed", "reservation_expired"} <= set(kinds)


def test_drain_lets_running_work_finish_then_takes_the_worker_offline(cluster: Cluster) -> None:
    local_worker(cluster, "box", gpus=0, slots=1)
    running = cluster.submit(job_name="running", entrypoint="sleep 1.5")
    cluster.wait_status(running, "running")
    with cluster.server.http(cluster.admin) as http:
        assert http.delete("/v1/scheduler/workers/box").status_code == 204
    later = cluster.submit(job_name="later", entrypoint="true")
    assert cluster.wait_status(running, "completed")["worker_id"] == "box"
    cluster.wait_for(
        lambda: any(w["id"] == "box" and w["status"] == "offline" for w in cluster.workers_info()),
        what="box to go offline",
    )
    t = cluster.task(later)
    assert t["status"] == "queued" and t["pending_reason"], t


def test_priority_patch_reorders_the_queue_and_users_get_403s(cluster: Cluster) -> None:
    first = cluster.submit(job_name="first", entrypoint="true", priority=5)
    second = cluster.submit(job_name="second", entrypoint="true", priority=5)
    bob = cluster.server.make_key("bob", "user")
    with cluster.server.http(bob) as http:
        r = http.patch(f"/v1/scheduler/jobs/{second}/priority", json={"priority": 9})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        for method, path in [
            ("GET", "/v1/scheduler/status"),
            ("GET", "/v1/scheduler/workers"),
            ("DELETE", "/v1/scheduler/workers/box"),
            ("GET", "/v1/scheduler/reservations"),
            ("POST", "/v1/scheduler/reservations"),
        ]:
            r = http.request(method, path, json={"gpu_count": 1} if method == "POST" else None)
            assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (method, path, r.text)
    with cluster.server.http(cluster.user) as http:
        r = http.patch(f"/v1/scheduler/jobs/{second}/priority", json={"priority": 9})
        assert r.status_code == 200 and r.json()["priority"] == 9
    local_worker(cluster, "solo", gpus=0, slots=1)
    assert started_order(cluster, [first, second]) == [second, first]
