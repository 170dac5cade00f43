"""What a real `fetchml worker --executor local` sends per task (the cost of a task on the
server): `collecting` only when there is an output to upload, the last report with the next
claim, no service long poll without service slots, no log line per HTTP request at info; and
the phase log (`--phase-log`) that says where each attempt's time went."""

from __future__ import annotations

import json
import re
import stat
import threading
from pathlib import Path

import httpx

from fetchml.core.protocol import RegisterWorkerRequest, RegisterWorkerResponse
from fetchml.runner.phases import PHASES
from fetchml.runner.worker import Worker, WorkerConfig
from tests.e2e.conftest import Cluster


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def requests_by_route(cluster: Cluster) -> dict[str, float]:
    text = httpx.get(f"{cluster.server.url}/metrics", headers={"X-API-Key": cluster.admin}, timeout=10).text
    counts: dict[str, float] = {}
    for m in re.finditer(r"^fetchml_http_requests_total\{(.*)\} (\S+)$", text, re.M):
        route = re.search(r'route="([^"]*)"', m.group(1))
        if route:
            counts[route.group(1)] = counts.get(route.group(1), 0.0) + float(m.group(2))
    return counts


def test_collecting_is_reported_only_for_outputs(cluster: Cluster) -> None:
    # Window 0: every task reports running on its own, however soon it ends (see the next test).
    cluster.start_worker("w1", "--executor", "local", "--service-slots", "0", "--running-report-window", "0")
    plain = [cluster.submit(entrypoint="true") for _ in range(3)]
    failing = cluster.submit(entrypoint="sh -c 'echo no; exit 2'")
    with_output = cluster.submit(entrypoint="sh -c 'echo 1 > \"$FETCHML_OUTPUT_DIR/m.txt\"'")
    for tid in plain:
        t = cluster.wait_status(tid, "completed", "failed")
        assert (t["status"], t["exit_code"]) == ("completed", 0), t
        assert t["started_at"] and t["ended_at"]
        assert cluster.server.task_transitions(tid) == [
            (None, "queued"),
            ("queued", "preparing"),
            ("preparing", "running"),
            ("running", "completed"),
        ]
    t = cluster.wait_status(failing, "completed", "failed")
    assert (t["status"], t["exit_code"], t["output"]) == ("failed", 2, "no")
    assert cluster.server.task_transitions(failing)[-1] == ("running", "failed")
    t = cluster.wait_status(with_output, "completed", "failed")
    assert t["status"] == "completed", t
    assert cluster.server.task_transitions(with_output)[-2:] == [
        ("running", "collecting"),
        ("collecting", "completed"),
    ]
    with cluster.server.http(cluster.admin) as http:
        assert [a["path"] for a in http.get(f"/v1/tasks/{with_output}/artifacts").json()] == ["m.txt"]

    counts = requests_by_route(cluster)
    # running for each task, and collecting once, for the one with an output. Each task's end
    # goes with the claim for the next one (docs/worker-protocol.md): no report request of its own.
    assert counts.get("/v1/tasks/{task_id}/report") == 5 + 1, counts
    assert counts.get("/v1/workers/{worker_id}/claim", 0) >= 5
    # No service slots: no service long poll, which the server answers with a write per task end.
    assert "/v1/workers/{worker_id}/services/claim" not in counts, counts
    # httpx's line per request is left out at info.
    assert "HTTP Request" not in cluster.worker_log("w1")


def test_a_task_that_ends_within_the_window_is_reported_once(cluster: Cluster) -> None:
    """A process that ends within the running-report window sends no running report: its end
    (with the next claim) says it started, and the task still starts (stamped, audited) before
    it ends. One that outlasts the window reports running when the window closes."""
    quick = [cluster.submit(entrypoint="true"), cluster.submit(entrypoint="sh -c 'echo bad; exit 3'")]
    slow = cluster.submit(entrypoint="sleep 3")
    cluster.start_worker("w1", "--executor", "local", "--service-slots", "0", "--batch-slots", "1",
                         "--running-report-window", "1")  # fmt: skip
    for tid, (status, code) in zip(quick, [("completed", 0), ("failed", 3)], strict=True):
        t = cluster.wait_status(tid, "completed", "failed")
        assert (t["status"], t["exit_code"]) == (status, code), t
        assert t["started_at"] and t["started_at"] == t["ended_at"]  # one transaction
        assert cluster.server.task_transitions(tid)[-1] == ("preparing", status)
    assert cluster.task(quick[1])["output"] == "bad"
    t = cluster.wait_status(slow, "running")
    assert t["started_at"] and not t.get("ended_at")
    assert cluster.wait_status(slow, "completed", "failed")["status"] == "completed"
    assert cluster.server.task_transitions(slow)[-2:] == [("preparing", "running"), ("running", "completed")]
    with cluster.server.http(cluster.admin) as http:
        page = http.get("/v1/audit/events", params={"event_type": "job_started", "limit": 100}).json()
    assert sorted(e["resource"] for e in page["events"]) == sorted(f"task:{t}" for t in [*quick, slow])
    # The slow task's running report is the only report of its own; every end went with a claim.
    assert requests_by_route(cluster).get("/v1/tasks/{task_id}/report") == 1


def test_the_last_report_claims_the_next_task_and_the_phase_log_says_so(cluster: Cluster) -> None:
    """One slot, three tasks queued before the worker starts: the first is claimed by the claim
    loop, each next one by the last report of the one before (its claim phase is 0), and every
    attempt's phases are logged, one JSON line each, in the order they follow each other."""
    ids = [cluster.submit(entrypoint="true") for _ in range(3)]
    log_path = cluster.tmp / "phases.jsonl"
    cluster.start_worker("w1", "--executor", "local", "--service-slots", "0", "--batch-slots", "1",
                         "--phase-log", str(log_path))  # fmt: skip
    for tid in ids:
        assert cluster.wait_status(tid, "completed", "failed")["status"] == "completed"
    lines = cluster.wait_for(
        lambda: (
            (x := [json.loads(r) for r in log_path.read_text().splitlines()] if log_path.exists() else [])
            and len(x) >= 3
            and x
        ),
        what="three phase lines",
    )
    assert [x["task_id"] for x in lines] == ids
    assert [x["status"] for x in lines] == ["completed"] * 3
    for x in lines:
        assert list(x)[:3] == ["task_id", "attempt", "status"]
        assert list(x)[3:] == list(PHASES), x  # every phase, in order
        assert all(isinstance(x[p], float) and x[p] >= 0 for p in PHASES), x
    assert lines[0]["claim"] > 0
    assert lines[1]["claim"] == lines[2]["claim"] == 0.0  # came with the last report before it
    # Each end went with a claim; the second and third task were placed by those claims.
    rows = cluster.server.db_exec(
        "SELECT data FROM events WHERE type = 'task_transition' AND task_id IN (?, ?) ORDER BY id",
        (ids[0], ids[1]),
    )
    moves = [(d["task_id"], d["to"]) for d in (json.loads(r[0]) for r in rows)]
    end_first, place_second = moves.index((ids[0], "completed")), moves.index((ids[1], "preparing"))
    assert end_first < place_second
    assert mode(log_path) == 0o600


def test_a_server_that_does_not_take_reports_with_claims_gets_plain_reports(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An older server ignores a claim's body, so a worker sends its last report with a claim
    only to a server whose registration answer says `claim_takes_report`, and leaves a running
    report out only for one that says `report_takes_started`. This server's answer is read as an
    older one's (the fields absent: false); the worker then reports running and every end through
    the report route, and every task still ends."""
    name = "older"
    client = cluster.server.client(cluster.server.make_key("wk-older", "worker", worker_name=name))
    register = client.workers.register

    def as_an_older_server(request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        answer = register(request).model_dump(exclude={"claim_takes_report", "report_takes_started"})
        return RegisterWorkerResponse.model_validate(answer)

    client.workers.register = as_an_older_server  # type: ignore[method-assign]
    before = requests_by_route(cluster).get("/v1/tasks/{task_id}/report", 0)
    cfg = WorkerConfig(name=name, work_dir=tmp_path / "w", executor="local", batch_slots=1, service_slots=0)
    cfg.running_report_window = 5.0  # wide: only the server's answer keeps the running reports
    w = Worker(cfg, client)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        assert w.registered.wait(30) and w.registration_error is None
        assert w.claim_takes_report is False and w.report_takes_started is False
        ids = [cluster.submit(entrypoint="true") for _ in range(3)]
        for tid in ids:
            assert cluster.wait_status(tid, "completed", "failed")["status"] == "completed"
        # running and the end of each, all through the report route
        assert requests_by_route(cluster).get("/v1/tasks/{task_id}/report", 0) - before == 2 * 3
    finally:
        w.request_stop()
        thread.join(30)
        client.close()
    assert not thread.is_alive()
