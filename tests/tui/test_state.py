"""The TUI's view state (fetchml/tui/state.py), without Textual: snapshots, seeds and events in
the shapes docs/events.md gives, applied in order, and what each pane then reads."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest

from fetchml.tui.state import (
    ADMIN,
    ENDED,
    QUEUE,
    RUNNING,
    STATUS,
    USER,
    WORKERS,
    Aging,
    QueueIndex,
    TaskFilter,
    Viewer,
    ViewState,
    infer_aging,
    parse_time,
)

T0 = 1_800_000_000.0  # a fixed "now" for the state's clock


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Feed:
    """Builds events as the scheduler stream sends them, with growing ids."""

    def __init__(self, state: ViewState, start: int = 0) -> None:
        self.state = state
        self.id = start
        self.now = T0

    def send(self, event: str, /, **data: Any) -> Any:
        self.id += 1
        body = {"id": self.id, "type": event, "at": iso(self.now), **data}
        return self.state.apply(event, body, self.id)

    def create(self, tid: str, prio: int = 5, user: str = "alice", name: str = "train") -> Any:
        return self.send(
            "task_transition", task_id=tid, job_name=name, user_id=user, to="queued", priority=prio,
            attempt=0, retry_count=0,
        )  # fmt: skip

    def move(
        self,
        tid: str,
        frm: str,
        to: str,
        worker: str | None = None,
        gpus: list[int] | None = None,
        **extra: Any,
    ) -> Any:
        data: dict[str, Any] = {"task_id": tid, "job_name": "train", "user_id": "alice", "from": frm, "to": to,
                                "priority": 5, "attempt": 1, "retry_count": 0, **extra}  # fmt: skip
        if worker is not None:
            data["worker_id"] = worker
            data["nodes"] = [{"worker_id": worker, "gpus": gpus or []}]
        return self.send("task_transition", **data)


def worker_json(
    wid: str, status: str = "active", gpus: int = 2, slots: int = 4, hb: float = T0 - 5
) -> dict[str, Any]:
    return {
        "id": wid, "name": wid, "status": status, "connected_at": iso(T0 - 3600), "last_heartbeat": iso(hb),
        "capabilities": {"cpu_cores": 8, "memory_gb": 32, "gpu_count": gpus, "gpu_type": "A100",
                         "gpus": [{"index": i, "name": "A100", "memory_mb": 1024} for i in range(gpus)],
                         "executor": "local"},
        "slots": {"batch_total": slots, "batch_available": slots, "service_total": 0, "service_available": 0},
        "active_tasks": [],
    }  # fmt: skip


def task_json(
    tid: str, status: str = "queued", prio: int = 5, created: float = T0 - 60, user: str = "alice",
    aged: float | None = None, worker: str | None = None, gpus: list[int] | None = None, own: bool = True, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    t: dict[str, Any] = {
        "id": tid, "job_name": extra.pop("job_name", "train"), "status": status, "priority": prio,
        "created_at": iso(created), "user_id": user, "retry_count": 0, "max_retries": 3, "node_count": 1,
        "gpu": len(gpus or []) or 1, "priority_aged": aged if aged is not None else prio + (T0 - created) / 3600.0,
        "attempt": 0 if status == "queued" else 1, "assigned_gpus": gpus or [], "cancel_requested": False,
        **extra,
    }  # fmt: skip
    if own:
        t["entrypoint"] = "train.py"
    if worker:
        t["worker_id"] = worker
        t["node_assignments"] = [{"node_id": 0, "worker_id": worker, "gpus": gpus or []}]
        t["started_at"] = iso(created + 10)
    return t


def snapshot(
    workers: list[dict[str, Any]],
    queue: list[dict[str, Any]],
    last: int = 0,
    depth: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "last_event_id": last, "resumed": False,
        "status": {"workers_total": len(workers), "workers_active": len(workers), "workers_draining": 0,
                   "batch_queue_depth": len(queue) if depth is None else depth, "service_queue_depth": 0,
                   "tasks_running": 0, "tasks_completed_24h": 0, "reservations_active": 0, "timestamp": iso(T0)},
        "workers": workers, "queue": queue, **extra,
    }  # fmt: skip


@pytest.fixture
def state() -> ViewState:
    s = ViewState(Viewer(ADMIN), clock=lambda: T0)
    s.apply("snapshot", snapshot([worker_json("w1"), worker_json("w2", gpus=1)], []), 0)
    return s


def queue_of(s: ViewState) -> list[str]:
    return list(s.queue_ids())


# --- snapshot and seed ------------------------------------------------------------------------


def test_the_snapshot_gives_workers_and_the_queue_head_in_scheduling_order() -> None:
    s = ViewState(clock=lambda: T0)
    head = [
        task_json("b", prio=5, created=T0 - 30),
        task_json("a", prio=9, created=T0 - 10),
        task_json("c", prio=5, created=T0 - 20),
    ]
    ch = s.apply(
        "snapshot", snapshot([worker_json("w1"), worker_json("w0", status="draining")], head, last=41), 41
    )
    assert ch.panes >= {WORKERS, QUEUE, RUNNING, STATUS}
    assert s.last_event_id == 41
    assert queue_of(s) == ["a", "b", "c"]  # priority first, then first in, first out
    assert s.worker_ids() == ["w0", "w1"]
    w0, w1 = s.workers["w0"], s.workers["w1"]
    assert (w1.status, w1.slots_total, w1.slots_used, w1.gpu_indices) == ("active", 4, 0, (0, 1))
    assert w0.drain == "draining"
    assert w1.heartbeat_age(T0) == pytest.approx(5)
    assert s.depth == 3
    assert s.summary() == "3 queued, 0 running, 1/2 workers active, 0 reservations"


def test_seed_adds_running_tasks_on_their_gpus_and_the_queue_past_its_head(state: ViewState) -> None:
    queued = [task_json(f"q{i:03}", prio=5, created=T0 - 600 + i) for i in range(50)]
    running = [
        task_json("r1", "running", worker="w1", gpus=[1]),
        task_json("r2", "preparing", worker="w2", gpus=[0]),
    ]
    state.seed(queued=queued, active=running, reservations=[])
    assert queue_of(state) == [f"q{i:03}" for i in range(50)]
    assert state.running_ids() == ["r1", "r2"]
    w1 = state.workers["w1"]
    assert w1.slots_used == 1 and w1.gpu_tasks == {1: "r1"}
    assert w1.gpus_text() == "0:- 1:r1"
    assert state.tasks["r1"].gpus_text == "w1:1"
    assert state.tasks["r1"].elapsed(T0) == pytest.approx(50)


def test_an_outside_window_snapshot_starts_over_and_says_so(state: ViewState) -> None:
    f = Feed(state)
    f.create("t1")
    assert queue_of(state) == ["t1"]
    state.apply("snapshot", snapshot([worker_json("w9")], [], last=900, reason="outside_replay_window"), 900)
    assert queue_of(state) == [] and list(state.workers) == ["w9"]
    assert "fresh snapshot" in state.note


# --- events -----------------------------------------------------------------------------------


def test_a_task_moves_from_queue_to_running_to_ended_with_its_timeline(state: ViewState) -> None:
    f = Feed(state)
    ch = f.create("t1")
    assert QUEUE in ch.panes and ch.tasks == {"t1"}
    f.send("queue_depth", depth=1, by_priority={"5": 1})
    assert queue_of(state) == ["t1"] and state.depth == 1

    ch = f.move("t1", "queued", "preparing", "w1", [0])
    assert {QUEUE, RUNNING, WORKERS} <= ch.panes
    assert queue_of(state) == [] and state.running_ids() == ["t1"]
    assert state.workers["w1"].gpu_tasks == {0: "t1"} and state.workers["w1"].slots_used == 1
    f.move("t1", "preparing", "running", "w1", [0])
    f.move("t1", "running", "collecting", "w1", [0])
    assert state.tasks["t1"].status == "collecting" and state.running_ids() == ["t1"]

    ch = f.move("t1", "collecting", "completed", "w1", [0], exit_code=0, cancelled=False)
    assert {RUNNING, ENDED, WORKERS} <= ch.panes
    assert state.running_ids() == [] and state.ended_ids() == ["t1"]
    assert state.workers["w1"].gpu_tasks == {} and state.workers["w1"].slots_used == 0
    t = state.tasks["t1"]
    assert [(s.from_, s.to) for s in t.timeline] == [
        (None, "queued"), ("queued", "preparing"), ("preparing", "running"), ("running", "collecting"),
        ("collecting", "completed"),
    ]  # fmt: skip
    assert [s.event_id for s in t.timeline] == [1, 3, 4, 5, 6]
    assert t.exit_code == 0 and t.timeline[-1].note == "exit 0"


def test_a_priority_change_reorders_the_queue_and_only_the_queue(state: ViewState) -> None:
    f = Feed(state)
    for tid in ("a", "b", "c"):
        f.create(tid)
        f.now += 1
    assert queue_of(state) == ["a", "b", "c"]
    versions = dict(state.versions)
    ch = f.send(
        "priority_changed",
        task_id="c",
        job_name="train",
        user_id="alice",
        **{"from": 5, "to": 8},
        status="queued",
    )
    assert ch.panes == {QUEUE, STATUS}
    assert queue_of(state) == ["c", "a", "b"]
    assert state.versions[WORKERS] == versions[WORKERS] and state.versions[RUNNING] == versions[RUNNING]
    f.send(
        "priority_changed",
        task_id="c",
        job_name="train",
        user_id="alice",
        **{"from": 8, "to": 5},
        status="queued",
    )
    assert queue_of(state) == ["a", "b", "c"]  # back in its FIFO place
    assert state.queue.position("c") == 2
    assert state.tasks["c"].timeline[-1].note == "priority 8 -> 5"


def test_aging_lets_an_old_low_priority_task_pass_a_new_high_one() -> None:
    s = ViewState(clock=lambda: T0)
    s.apply("snapshot", snapshot([], []), 0)
    old = task_json("old", prio=2, created=T0 - 9 * 3600)  # aged 11 at rate 1/h
    new = task_json("new", prio=10, created=T0 - 60)
    mid = task_json("mid", prio=6, created=T0 - 3600)  # aged 7
    s.seed(queued=[new, mid, old], replace=True)
    assert queue_of(s) == ["old", "new", "mid"]
    # A task that comes later, at priority 10, goes behind the waiting priority-10 task (FIFO).
    Feed(s).create("later", prio=10)
    assert queue_of(s) == ["old", "new", "later", "mid"]


def test_aging_is_inferred_from_the_servers_priority_aged() -> None:
    slow = [task_json(f"t{i}", prio=3, created=T0 - 7200, aged=3 + 2 * 0.5) for i in range(3)]
    assert infer_aging(slow, T0).rate == pytest.approx(0.5)
    off = [task_json("t", prio=3, created=T0 - 7200, aged=3.0)]
    assert infer_aging(off, T0).rate == 0.0
    assert infer_aging([], T0).rate == 1.0  # nothing tells: the default
    # With aging off the order is priority, then FIFO, whatever the waits.
    s = ViewState(clock=lambda: T0)
    s.seed(
        queued=[
            task_json("old", prio=2, created=T0 - 9 * 3600, aged=2.0),
            task_json("new", prio=3, aged=3.0),
        ],
        replace=True,
    )
    assert queue_of(s) == ["new", "old"]


def test_aging_scores_past_the_cap_tie_and_run_first_in_first_out() -> None:
    a = Aging(rate=1.0, cap=15.0, ref=T0)
    assert a.score(1, T0 - 100 * 3600) == a.score(10, T0 - 6 * 3600) == 15.0
    q = QueueIndex()
    q.add("young", a.score(10, T0 - 6 * 3600), T0 - 6 * 3600)
    q.add("old", a.score(1, T0 - 100 * 3600), T0 - 100 * 3600)
    assert list(q) == ["old", "young"]


def test_placement_moves_a_task_between_gpus(state: ViewState) -> None:
    f = Feed(state)
    f.create("g")
    f.move("g", "queued", "preparing", "w1", [0])
    f.send("task_placement", task_id="g", job_name="train", user_id="alice", status="preparing", worker_id="w2",
           nodes=[{"worker_id": "w2", "gpus": [0]}])  # fmt: skip
    assert state.workers["w1"].gpu_tasks == {} and state.workers["w1"].tasks == set()
    assert state.workers["w2"].gpu_tasks == {0: "g"} and state.tasks["g"].worker_id == "w2"


def test_a_worker_drains_goes_offline_and_comes_back(state: ViewState) -> None:
    f = Feed(state)
    ch = f.send("worker_draining", worker_id="w1", name="w1", status="draining", **{"from": "active"})
    assert WORKERS in ch.panes
    assert (state.workers["w1"].status, state.workers["w1"].drain) == ("draining", "draining")
    f.send(
        "worker_disconnected",
        worker_id="w1",
        name="w1",
        status="offline",
        reason="offline",
        **{"from": "draining"},
    )
    assert (state.workers["w1"].status, state.workers["w1"].drain) == ("offline", "drained")
    f.send("worker_connected", worker_id="w1", name="w1", status="active", **{"from": "offline"})
    assert (state.workers["w1"].status, state.workers["w1"].drain) == ("active", "")
    f.send(
        "worker_disconnected",
        worker_id="w2",
        name="w2",
        status="offline",
        reason="heartbeat_lost",
        **{"from": "active"},
    )
    w2 = state.workers["w2"]
    assert (w2.status, w2.drain, w2.offline_reason) == ("offline", "", "heartbeat_lost")
    f.send("worker_connected", worker_id="w3", name="w3", status="active")  # a new one
    assert state.worker_ids() == ["w1", "w2", "w3"]
    assert state.worker_ids("status") == ["w1", "w3", "w2"]


def test_a_lost_worker_sends_its_task_back_to_the_queue(state: ViewState) -> None:
    f = Feed(state)
    f.create("t")
    f.move("t", "queued", "running", "w1", [0, 1])
    assert state.workers["w1"].gpu_tasks == {0: "t", 1: "t"}
    f.send(
        "worker_disconnected",
        worker_id="w1",
        name="w1",
        status="offline",
        reason="heartbeat_lost",
        **{"from": "active"},
    )
    f.move("t", "running", "queued", retry_count=1)
    assert queue_of(state) == ["t"] and state.running_ids() == []
    assert state.workers["w1"].gpu_tasks == {} and state.tasks["t"].retry_count == 1
    assert state.tasks["t"].worker_id is None and state.tasks["t"].gpus_text == "-"


def test_cancelling_a_queued_task_ends_it(state: ViewState) -> None:
    f = Feed(state)
    f.create("x")
    f.create("y")
    f.move("x", "queued", "failed", error="cancelled", cancelled=True)
    assert queue_of(state) == ["y"] and state.ended_ids() == ["x"]
    assert state.tasks["x"].timeline[-1].note == "cancelled"


def test_reservations_are_made_and_expire(state: ViewState) -> None:
    f = Feed(state)
    body = {
        "reservation_id": "r1",
        "user_id": "root",
        "gpu_count": 1,
        "gpu_type": "A100",
        "node_count": 1,
        "expires_at": iso(T0 + 60),
    }
    f.send("reservation_changed", status="active", **body)
    f.send(
        "reservation_changed", status="active", **{**body, "reservation_id": "r2", "expires_at": iso(T0 + 30)}
    )
    assert state.reservation_ids() == ["r2", "r1"]
    f.send("reservation_changed", status="expired", **{"from": "active"}, **body)
    assert state.reservation_ids() == ["r2", "r1"] and state.reservations["r1"].status == "expired"
    assert "1 reservations" in state.summary()


def test_events_after_a_snapshot_converge_with_a_seed_read_later(state: ViewState) -> None:
    """The app reads the running tasks after the snapshot: events older than that read arrive
    after it and must not leave stale state behind."""
    # Snapshot at id 0 with t queued; by the time of the read t already runs on w1.
    state.seed(active=[task_json("t", "running", worker="w1", gpus=[0])])
    f = Feed(state)
    f.move("t", "queued", "preparing", "w1", [0])  # replayed, older than the read
    f.move("t", "preparing", "running", "w1", [0])
    assert state.running_ids() == ["t"] and queue_of(state) == []
    assert state.workers["w1"].gpu_tasks == {0: "t"}
    f.move("t", "running", "completed", "w1", [0], exit_code=0, cancelled=False)
    assert state.running_ids() == [] and state.workers["w1"].slots_used == 0


def test_the_same_event_from_two_streams_counts_once(state: ViewState) -> None:
    f = Feed(state)
    f.create("t")
    body = {"id": 7, "type": "task_transition", "at": iso(T0), "task_id": "t", "from": "queued", "to": "running",
            "worker_id": "w1", "nodes": [{"worker_id": "w1", "gpus": [0]}]}  # fmt: skip
    state.apply("task_transition", body, 7)
    state.apply("transition", body, 7)
    assert [s.to for s in state.tasks["t"].timeline] == ["queued", "running"]


def test_malformed_and_unknown_events_change_nothing(state: ViewState) -> None:
    before = dict(state.versions)
    for name, data in [
        ("task_transition", {}), ("task_transition", {"task_id": 3, "to": "queued"}), ("priority_changed", {"task_id": "nope", "to": 3}),
        ("task_placement", {"task_id": "nope"}), ("worker_connected", {}), ("reservation_changed", {}),
        ("brand_new_event", {"x": 1}), ("end", {"task_id": "nope"}),
    ]:  # fmt: skip
        assert not state.apply(name, data, None), name
    assert state.versions == before


def test_ended_tasks_are_kept_up_to_a_limit(state: ViewState) -> None:
    s = ViewState(clock=lambda: T0, ended_limit=3)
    f = Feed(s)
    for i in range(5):
        f.create(f"t{i}")
        f.move(f"t{i}", "queued", "failed", error="cancelled", cancelled=True)
    assert s.ended_ids() == ["t4", "t3", "t2"]
    assert "t0" not in s.tasks and "t1" not in s.tasks


# --- the viewer -------------------------------------------------------------------------------


def test_a_user_key_sees_its_own_tasks_live_and_may_change_only_those() -> None:
    s = ViewState(Viewer(USER), clock=lambda: T0)
    assert not s.may_drain and not s.sees_scheduler
    mine = task_json("mine", prio=5, created=T0 - 100)
    theirs = task_json("theirs", prio=5, created=T0 - 200, user="bob", own=False)
    running = task_json("mine-run", "running", worker="w1", gpus=[0])
    s.seed(queued=[mine, theirs], active=[running], live=False, replace=True)
    assert s.viewer.user_id == "alice"  # learnt from the tasks whose contents it may read
    assert queue_of(s) == ["theirs", "mine"]
    assert s.may_change(s.tasks["mine"]) and not s.may_change(s.tasks["theirs"])
    assert "entrypoint" not in s.tasks["theirs"].fields
    assert not s.tasks["mine"].live
    assert s.summary() == "2 queued, 1 running"

    # Its own task's job stream: snapshot, transitions, end.
    s.apply("snapshot", {"last_event_id": 10, "resumed": False, "task": mine, "terminal": False}, 10)
    assert s.tasks["mine"].live
    body = {
        "task_id": "mine",
        "job_name": "train",
        "user_id": "alice",
        "priority": 5,
        "attempt": 1,
        "retry_count": 0,
    }
    s.apply("transition", {"id": 11, "type": "task_transition", "at": iso(T0), "from": "queued", "to": "running",
                           "worker_id": "w1", "nodes": [{"worker_id": "w1", "gpus": [1]}], **body}, 11)  # fmt: skip
    assert queue_of(s) == ["theirs"] and s.running_ids() == ["mine-run", "mine"]
    s.apply("transition", {"id": 12, "type": "task_transition", "at": iso(T0), "from": "running", "to": "completed",
                           "exit_code": 0, "cancelled": False, **body}, 12)  # fmt: skip
    s.apply("end", {"task_id": "mine", "status": "completed", "outcome": "completed", "exit_code": 0})
    assert s.running_ids() == ["mine-run"] and s.ended_ids() == ["mine"] and not s.tasks["mine"].live


def test_an_end_without_its_transition_still_ends_the_task() -> None:
    s = ViewState(Viewer(USER, "alice"), clock=lambda: T0)
    s.seed(active=[task_json("t", "running", worker="w1", gpus=[0])], replace=True)
    s.apply("end", {"task_id": "t", "status": "failed", "outcome": "cancelled", "error": "cancelled"})
    assert s.running_ids() == [] and s.tasks["t"].status == "failed"
    assert s.tasks["t"].timeline[-1].note == "cancelled"


def test_a_user_who_owns_nothing_yet_is_not_guessed() -> None:
    s = ViewState(Viewer(USER), clock=lambda: T0)
    s.seed(queued=[task_json("a", user="bob", own=False)], replace=True)
    assert s.viewer.user_id is None and not s.may_change(s.tasks["a"])


# --- filters and sorts ------------------------------------------------------------------------


def test_filters_and_sorts(state: ViewState) -> None:
    f = Feed(state)
    f.create("a1", user="alice", name="train-big")
    f.now += 1
    f.create("b1", user="bob", name="eval", prio=7)
    f.now += 1
    f.create("a2", user="alice", name="eval")
    f.move("a2", "queued", "running", "w1", [0])
    assert list(state.queue_ids(TaskFilter.parse("user:alice"))) == ["a1"]
    assert list(state.queue_ids(TaskFilter.parse("name:TRAIN"))) == ["a1"]
    assert list(state.queue_ids(TaskFilter.parse("bob"))) == ["b1"]
    assert state.running_ids(TaskFilter.parse("status:running")) == ["a2"]
    assert state.running_ids(TaskFilter.parse("status:queued")) == []
    assert list(state.queue_ids(sort="newest")) == ["b1", "a1"]
    assert list(state.queue_ids(sort="user")) == ["a1", "b1"]
    flt = TaskFilter.parse("user:alice")
    first = state.queue_ids(flt)
    assert state.queue_ids(flt) is first  # cached until the queue changes
    f.create("a3", user="alice")
    assert list(state.queue_ids(flt)) == ["a1", "a3"]
    assert not TaskFilter.parse("  ") and TaskFilter.parse("s:failed").status == "failed"


def test_parse_time() -> None:
    assert parse_time("2026-12-02T05:01:05.317130+00:00") == parse_time("2026-12-02T05:01:05.317130Z")
    assert parse_time("yesterday") is None and parse_time(None) is None


# --- scale ------------------------------------------------------------------------------------


def test_ten_thousand_queued_and_a_hundred_workers_stay_incremental() -> None:
    s = ViewState(clock=lambda: T0)
    workers = [worker_json(f"w{i:03}", gpus=8, slots=8) for i in range(100)]
    tracemalloc.start()
    s.apply("snapshot", snapshot(workers, [], depth=10_000), 0)
    queued = [task_json(f"{i:032x}", prio=1 + i % 10, created=T0 - 36_000 + i) for i in range(10_000)]
    started = time.perf_counter()
    s.seed(queued=queued, active=[], reservations=[])
    seed_s = time.perf_counter() - started
    assert len(s.queue) == 10_000
    index = s.queue_ids()
    assert index is s.queue  # the pane reads the index itself: no copy per repaint

    f = Feed(s, start=1)
    started = time.perf_counter()
    for i in range(1000):
        tid = f"{i * 7:032x}"
        if i % 3 == 0:
            f.send(
                "priority_changed",
                task_id=tid,
                job_name="train",
                user_id="alice",
                **{"from": 1, "to": 10},
                status="queued",
            )
        elif i % 3 == 1:
            f.move(tid, "queued", "running", f"w{i % 100:03}", [i % 8])
        else:
            f.create(f"new{i:029}")
        f.send("queue_depth", depth=len(s.queue), by_priority={})
    per_event = (time.perf_counter() - started) / 2000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert s.queue_ids() is index and len(s.queue) == 10_000 - 333 + 333
    assert len(s.running) == 333
    # Generous bounds for a busy 2-core CI machine; typical figures are ~20 us and ~0.5 s.
    assert per_event < 0.002, per_event
    assert seed_s < 5.0, seed_s
    assert peak < 200 * 2**20, peak
