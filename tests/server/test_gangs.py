"""Gangs (node_count > 1) and the node-level protocol, played by hand over real HTTP.

Each test gives its workers a GPU type of its own, so workers left registered by earlier
tests of the module never fit its tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fetchml.core.errors import ConflictError
from fetchml.core.protocol import Assignment
from tests.harness import Keys, ServerHandle, make_keys
from tests.protocol_kit import FakeWorker, cancel_leftovers, get_task, submit, unique

LEASE = 30.0


@pytest.fixture(scope="module")
def fast(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
        FETCHML_HEARTBEAT_INTERVAL="0.5",
        # Long leases, so a slow machine never loses a node by accident; the test that loses
        # one moves the server's clock past its lease instead.
        FETCHML_HEARTBEAT_TIMEOUT=str(LEASE),
        FETCHML_SWEEP_INTERVAL="0.2",
        FETCHML_CLAIM_WAIT="1",
    )


@pytest.fixture(scope="module")
def keys(fast: ServerHandle) -> Keys:
    return make_keys(fast)


@pytest.fixture
def gpu_type() -> str:
    return unique("G")


@pytest.fixture
def pair(fast: ServerHandle, keys: Keys, gpu_type: str) -> Iterator[list[FakeWorker]]:
    made = [FakeWorker(fast, keys.worker) for _ in range(2)]
    for w in made:
        w.register(gpus=[0, 1], gpu_type=gpu_type)
    yield made
    cancel_leftovers(fast, keys.admin)
    for w in made:
        w.close()


def gang(fast: ServerHandle, keys: Keys, gpu_type: str, **kw: Any) -> str:
    body: dict[str, Any] = {"gpu": 2, "gpu_type": gpu_type, "node_count": 2, "max_retries": 1}
    body.update(kw)
    return submit(fast, keys.user, "gang", **body).id


def claim_both(pair: list[FakeWorker]) -> tuple[Assignment, Assignment]:
    a0 = pair[0].must_claim()
    a1 = pair[1].must_claim()
    return a0, a1


def test_both_nodes_get_rank_master_and_their_own_gpus(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    a0, a1 = claim_both(pair)
    assert (a0.task.id, a1.task.id) == (tid, tid)
    assert (a0.node_rank, a1.node_rank, a0.num_nodes, a1.num_nodes) == (0, 1, 2, 2)
    assert a0.master_addr == a1.master_addr and a0.master_addr
    assert a0.master_port == a1.master_port and a0.master_port is not None
    assert a0.gpus == a1.gpus == [0, 1]
    task = get_task(fast, keys.user, tid)
    assert [(n.node_id, n.worker_id, n.slot_assigned) for n in task.node_assignments] == [
        (0, pair[0].name, True),
        (1, pair[1].name, True),
    ]
    # The task's status sums its nodes up: running at the first, collecting when all are,
    # completed when the last completes.
    assert pair[1].report(a1, "running", node_rank=1).status == "running"
    assert pair[0].report(a0, "running").status == "running"
    assert pair[0].report(a0, "collecting").status == "running"
    assert pair[1].report(a1, "collecting", node_rank=1).status == "collecting"
    done = pair[0].report(a0, "completed", exit_code=0, output="rank0 says hi")
    assert done.status == "collecting"
    done = pair[1].report(a1, "completed", exit_code=0, node_rank=1)
    assert (done.status, done.exit_code, done.output) == ("completed", 0, "rank0 says hi")


def test_reports_must_name_a_live_node_of_the_live_attempt(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    gang(fast, keys, gpu_type)
    _, a1 = claim_both(pair)
    with pytest.raises(ConflictError):
        pair[1].report(a1, "running", node_rank=5)
    with pytest.raises(ConflictError):
        pair[1].report(a1, "running", node_rank=1, attempt=a1.attempt + 1)
    pair[1].report(a1, "collecting", node_rank=1)
    with pytest.raises(ConflictError):  # nodes move forward only
        pair[1].report(a1, "running", node_rank=1)


def test_a_failed_node_stops_the_others_and_fails_the_task(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    a0, a1 = claim_both(pair)
    pair[0].report(a0, "running")
    pair[1].report(a1, "running", node_rank=1)
    t = pair[1].report(a1, "failed", node_rank=1, exit_code=3)
    assert t.status == "running"  # rank 0 still holds its GPUs
    cmds = pair[0].heartbeat(a0).commands
    assert [(c.type, c.task_id, c.attempt) for c in cmds] == [("cancel", tid, a0.attempt)]
    t = pair[0].report(a0, "failed", exit_code=-15, error="cancelled")
    assert t.status == "failed"
    assert t.error is not None and t.error.startswith(f"node 1 ({pair[1].name}) failed: exit code 3"), t.error
    assert t.exit_code == 3


def test_a_lost_node_retries_the_gang_as_a_whole(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    a0, a1 = claim_both(pair)
    pair[0].report(a0, "running")
    pair[1].report(a1, "running", node_rank=1)
    # pair[1] falls silent; pair[0] keeps heartbeating and is told to stop once 1 is lost.
    for _ in range(4):
        fast.advance_clock(LEASE / 3)
        assert pair[0].heartbeat(a0).status == "active"
    deadline = time.monotonic() + 10
    cmds: list[Any] = []
    while time.monotonic() < deadline and not cmds:
        cmds = pair[0].heartbeat(a0).commands
        time.sleep(0.2)
    assert [(c.type, c.task_id) for c in cmds] == [("cancel", tid)]
    statuses = {n.worker_id: n.status for n in get_task(fast, keys.user, tid).node_assignments}
    assert statuses == {pair[0].name: "running", pair[1].name: "lost"}
    t = pair[0].report(a0, "failed", exit_code=-15, error="cancelled")
    assert (t.status, t.retry_count, t.node_assignments) == ("queued", 1, [])


def test_cancel_stops_every_node(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    a0, a1 = claim_both(pair)
    with fast.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    for w, a, rank in ((pair[0], a0, 0), (pair[1], a1, 1)):
        assert [c.task_id for c in w.heartbeat(a).commands] == [tid]
        t = w.report(a, "failed", node_rank=rank, error="cancelled")
    assert (t.status, t.error) == ("failed", "cancelled")


def test_a_gang_placed_but_not_yet_claimed_is_cancelled_at_once(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    a0 = pair[0].must_claim()
    assert a0.task.id == tid
    with fast.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    assert get_task(fast, keys.user, tid).status == "preparing"
    # Rank 1 was never claimed: it will never start, and pair[1] gets nothing.
    assert pair[1].claim() is None
    t2 = pair[0].report(a0, "failed", error="cancelled")
    assert (t2.status, t2.error) == ("failed", "cancelled")
    assert [n.status for n in t2.node_assignments] == ["stopped", "lost"]


def test_heartbeat_tells_a_worker_to_stop_an_attempt_that_is_no_longer_its(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    t = submit(fast, keys.user, "single", gpu=1, gpu_type=gpu_type)
    a = pair[0].must_claim()
    assert a.task.id == t.id
    cmds = pair[0].heartbeat((t.id, a.attempt + 7)).commands
    assert [(c.type, c.task_id, c.attempt) for c in cmds] == [("cancel", t.id, a.attempt + 7)]
    # An attempt whose end the worker reported itself is winding down: no command for it.
    pair[0].run_to(a, "running", "collecting", "completed")
    assert pair[0].heartbeat(a).commands == []


def test_two_gangs_that_fit_only_one_at_a_time_never_share_a_gpu(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    first = gang(fast, keys, gpu_type)
    second = gang(fast, keys, gpu_type)
    a0, a1 = claim_both(pair)
    assert a0.task.id == a1.task.id == first
    assert pair[0].claim() is None and pair[1].claim() is None
    reason = get_task(fast, keys.user, second).pending_reason
    assert reason is not None and reason.startswith("waiting for 2 nodes; 0 fit now"), reason
    for w, a, rank in ((pair[0], a0, 0), (pair[1], a1, 1)):
        w.report(a, "running", node_rank=rank)
        w.report(a, "collecting", node_rank=rank)
        w.report(a, "completed", node_rank=rank, exit_code=0)
    b0, b1 = claim_both(pair)
    assert b0.task.id == b1.task.id == second


def test_a_waiting_gang_is_not_starved_by_smaller_tasks_behind_it(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    """The policy (docs/scheduling.md): the highest-ordered gang that cannot start holds the
    capacity it waits for; tasks behind it may not take that capacity, so it starts as soon as
    the rest comes free instead of losing each freed GPU to the next small task."""
    s0 = submit(fast, keys.user, "busy-0", gpu=2, gpu_type=gpu_type)
    b0 = pair[0].must_claim()
    s1 = submit(fast, keys.user, "busy-1", gpu=2, gpu_type=gpu_type)
    b1 = pair[1].must_claim()
    assert (b0.task.id, b1.task.id) == (s0.id, s1.id)
    big = gang(fast, keys, gpu_type, priority=5)
    small = submit(fast, keys.user, "small", gpu=1, gpu_type=gpu_type, priority=5)
    # pair[0] comes free first: the small task fits there, but the gang is ahead of it.
    pair[0].run_to(b0, "running", "collecting", "completed")
    assert pair[0].claim() is None
    reason = get_task(fast, keys.user, small.id).pending_reason
    assert reason == f"priority: capacity held for higher-priority task {big}", reason
    big_reason = get_task(fast, keys.user, big).pending_reason
    assert big_reason is not None and f"capacity on {pair[0].name}" in big_reason, big_reason
    pair[1].run_to(b1, "running", "collecting", "completed")
    g1 = pair[1].must_claim()
    g0 = pair[0].must_claim()
    assert g0.task.id == g1.task.id == big
    assert get_task(fast, keys.user, small.id).status == "queued"


def test_draining_a_worker_takes_back_a_gang_placed_there_that_never_started(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    tid = gang(fast, keys, gpu_type)
    # A third worker's claim decides for the whole cluster: the gang lands on the pair, unclaimed.
    other = FakeWorker(fast, keys.worker)
    other.register(gpus=[0], gpu_type=unique("other"))
    try:
        assert other.claim() is None
        nodes = get_task(fast, keys.user, tid).node_assignments
        assert sorted((n.worker_id, n.slot_assigned, n.status) for n in nodes) == sorted(
            [(pair[0].name, False, "assigned"), (pair[1].name, False, "assigned")]
        )
        with fast.http(keys.admin) as http:
            assert http.delete(f"/v1/scheduler/workers/{pair[1].name}").status_code == 204
        t = get_task(fast, keys.user, tid)
        assert (t.status, t.retry_count, t.node_assignments) == ("queued", 0, [])  # no retry spent
        assert pair[0].claim() is None  # one active worker cannot host a 2-node gang
        t = get_task(fast, keys.user, tid)
        assert t.pending_reason is not None and "2 nodes" in t.pending_reason, t.pending_reason
    finally:
        other.close()


def test_a_node_that_stopped_frees_its_worker_while_the_rest_of_its_gang_winds_down(
    fast: ServerHandle, keys: Keys, gpu_type: str, pair: list[FakeWorker]
) -> None:
    third = FakeWorker(fast, keys.worker)
    third.register(gpus=[0, 1], gpu_type=gpu_type)
    try:
        tid = gang(fast, keys, gpu_type, node_count=3)
        a0, a1 = claim_both(pair)
        a2 = third.must_claim()
        ranks = {a.node_rank: (w, a) for w, a in ((pair[0], a0), (pair[1], a1), (third, a2))}
        (wf, af), (ws, as_), (wr, ar) = ranks[2], ranks[1], ranks[0]
        for w, a in (wf, af), (ws, as_), (wr, ar):
            w.report(a, "running", node_rank=a.node_rank)
        wf.report(af, "failed", node_rank=2, exit_code=1)
        t = ws.report(as_, "failed", node_rank=1, error="cancelled")  # told to stop, stopped
        assert t.status == "running"  # rank 0 has not stopped yet
        assert [n.status for n in t.node_assignments] == ["running", "stopped", "failed"]
        # The stopped and the failed node's workers are free again; rank 0's is not.
        small = submit(fast, keys.user, "small", gpu=2, gpu_type=gpu_type)
        got = ws.must_claim()
        assert got.task.id == small.id
        assert wr.claim() is None
        wr.report(ar, "failed", error="cancelled")
        assert get_task(fast, keys.user, tid).status == "failed"
    finally:
        third.close()
