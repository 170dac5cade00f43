"""What a real `fetchml worker --executor local` sends per task (the cost of a task on the
server): `collecting` only when there is an output to upload, no service long poll without
service slots, and no log line per HTTP request at info."""

from __future__ import annotations

import json
import re

import httpx

from tests.e2e.conftest import Cluster


def transitions(cluster: Cluster, task_id: str) -> list[tuple[str | None, str]]:
    rows = cluster.server.db_exec(
        "SELECT data FROM events WHERE task_id = ? AND type = 'task_transition' ORDER BY id", (task_id,)
    )
    return [(d.get("from"), d["to"]) for d in (json.loads(r[0]) for r in rows)]


def requests_by_route(cluster: Cluster) -> dict[str, float]:
    text = httpx.get(f"{cluster.server.url}/metrics", headers={"X-API-Key": cluster.admin}, timeout=10).text
    counts: dict[str, float] = {}
    for m in re.finditer(r"^fetchml_http_requests_total\{(.*)\} (\S+)$", text, re.M):
        route = re.search(r'route="([^"]*)"', m.group(1))
        if route:
            counts[route.group(1)] = counts.get(route.group(1), 0.0) + float(m.group(2))
    return counts


def test_collecting_is_reported_only_for_outputs(cluster: Cluster) -> None:
    cluster.start_worker("w1", "--executor", "local", "--service-slots", "0")
    plain = [cluster.submit(entrypoint="true") for _ in range(3)]
    failing = cluster.submit(entrypoint="sh -c 'echo no; exit 2'")
    with_output = cluster.submit(entrypoint="sh -c 'echo 1 > \"$FETCHML_OUTPUT_DIR/m.txt\"'")
    for tid in plain:
        t = cluster.wait_status(tid, "completed", "failed")
        assert (t["status"], t["exit_code"]) == ("completed", 0), t
        assert t["started_at"] and t["ended_at"]
        assert transitions(cluster, tid) == [
            (None, "queued"),
            ("queued", "preparing"),
            ("preparing", "running"),
            ("running", "completed"),
        ]
    t = cluster.wait_status(failing, "completed", "failed")
    assert (t["status"], t["exit_code"], t["output"]) == ("failed", 2, "no")
    assert transitions(cluster, failing)[-1] == ("running", "failed")
    t = cluster.wait_status(with_output, "completed", "failed")
    assert t["status"] == "completed", t
    assert transitions(cluster, with_output)[-2:] == [("running", "collecting"), ("collecting", "completed")]
    with cluster.server.http(cluster.admin) as http:
        assert [a["path"] for a in http.get(f"/v1/tasks/{with_output}/artifacts").json()] == ["m.txt"]

    counts = requests_by_route(cluster)
    # running + the end for each task; collecting once, for the one with an output.
    assert counts.get("/v1/tasks/{task_id}/report") == 2 * 5 + 1, counts
    assert counts.get("/v1/workers/{worker_id}/claim", 0) >= 5
    # No service slots: no service long poll, which the server answers with a write per task end.
    assert "/v1/workers/{worker_id}/services/claim" not in counts, counts
    # httpx's line per request is left out at info.
    assert "HTTP Request" not in cluster.worker_log("w1")
