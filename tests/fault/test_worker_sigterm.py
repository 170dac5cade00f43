"""SIGTERM of a worker with a task running: the task finishes within the grace, or is stopped and
requeued without spending a retry, and two attempts never run at once. No claims after SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.fault.conftest import Cluster, procs_of

# Appends "tick <attempt> <time>" every 0.1 s to a file outside the workspace, ignoring SIGTERM.
# Attempt 1 runs (for ever, as far as the test goes); later attempts end after a second.
STUBBORN = (
    'sh -c \'trap "" TERM; n=0; '
    'if [ "$FETCHML_ATTEMPT" = 1 ]; then max=600; else max=10; fi; '
    'while [ $n -lt $max ]; do echo "tick $FETCHML_ATTEMPT $(date +%s.%N)" >> {ticks}; '
    "echo tick; sleep 0.1; n=$((n+1)); done'"
)


def test_a_task_that_finishes_within_the_grace_completes_and_nothing_new_is_claimed(
    fault_cluster: Cluster,
) -> None:
    c = fault_cluster
    wa = c.start_worker("wa", "--executor", "local", "--stop-grace", "8")
    tid = c.submit(entrypoint="sh -c 'echo start; sleep 2; echo end'")
    c.wait_for(lambda: "start" in c.logs(tid), what="the task to start")
    wa.send_signal(signal.SIGTERM)
    # Submitted after the stop: the stopping worker must not take it.
    late = c.submit(entrypoint="echo late")
    assert wa.wait(20) == 0, c.worker_log("wa")
    t = c.task(tid)
    assert t["status"] == "completed", t
    assert t["retry_count"] == 0 and t["attempt"] == 1
    assert c.logs(tid) == ["start", "end"]
    lt = c.task(late)
    assert lt["status"] == "queued" and lt["retry_count"] == 0, lt
    assert f"for task {late}" not in c.worker_log("wa")  # never started there
    assert c.workers_info() == [{"id": "wa", "status": "offline"}]
    # Another worker runs the late task.
    c.start_worker("wb", "--executor", "local")
    assert c.wait_status(late, "completed", "failed")["status"] == "completed"


def test_a_task_past_the_grace_is_requeued_without_a_retry_and_never_overlaps(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    c = fault_cluster
    ticks = tmp_path / "ticks.txt"
    wkey_a = c.server.make_key("wk-a", "worker", worker_name="wa")
    wa = c.start_worker("wa", "--executor", "local", "--stop-grace", "2", key=wkey_a)
    tid = c.submit(entrypoint=STUBBORN.format(ticks=ticks), max_retries=0)
    c.wait_for(lambda: ticks.exists() and "tick 1" in ticks.read_text(), what="attempt 1 to tick")
    wa.send_signal(signal.SIGTERM)
    c.start_worker("wb", "--executor", "local")  # ready to take the task back as soon as it is requeued
    # 2 s grace, SIGTERM (ignored), SIGKILL 2 s later, the report, exit: well under the
    # 3 s heartbeat timeout times two; the lease never runs out meanwhile (heartbeats go on).
    assert wa.wait(20) == 0, c.worker_log("wa")
    assert "interrupted" in c.worker_log("wa")
    t = c.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "completed", t
    # max_retries=0: a retry spent would have failed it; it was requeued without one.
    assert t["retry_count"] == 0 and t["attempt"] == 2 and t["worker_id"] == "wb", t
    stamps: dict[int, list[float]] = {1: [], 2: []}
    for line in ticks.read_text().splitlines():
        _, attempt, at = line.split()
        stamps[int(attempt)].append(float(at))
    assert stamps[1] and len(stamps[2]) == 10
    assert max(stamps[1]) < min(stamps[2]), "attempt 2 started while attempt 1 was still running"
    assert not procs_of(tid)
    # The interrupted attempt is fenced: a late report of it is refused.
    with c.server.http(wkey_a) as http:
        r = http.post(f"/v1/tasks/{tid}/report", json={"attempt": 1, "status": "completed", "exit_code": 0})
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
    # The requeue is audited as an interruption, with no retry spent.
    rows = c.server.db_exec(
        "SELECT metadata FROM audit_events WHERE resource = ? AND action = 'requeue'", (f"task:{tid}",)
    )
    assert len(rows) == 1 and '"interrupted": true' in str(rows[0][0]).replace("True", "true"), rows
