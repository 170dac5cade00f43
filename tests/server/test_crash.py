"""kill -9 in the middle of a submission burst loses no accepted task and leaves a valid chain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.harness import ServerHandle, make_keys

THREADS = 8


@pytest.mark.slow
def test_kill_9_during_a_burst_loses_nothing_that_was_accepted(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(10**7))
    keys = make_keys(srv)
    accepted: list[tuple[str, str]] = []  # (task id, job name) of every 201
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def hammer(n: int) -> None:
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": keys.user}, timeout=10) as http:
            i = 0
            while not stop.is_set():
                name = f"burst-{n}-{i}"
                i += 1
                try:
                    r = http.post("/v1/tasks", json={"job_name": name, "priority": 1 + i % 10})
                except httpx.TransportError:
                    return  # the server is gone: the answer never came, so nothing was promised
                if r.status_code == 201:
                    with lock:
                        accepted.append((r.json()["id"], name))
                elif r.status_code != 503:
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(15)
    assert not errors, errors[:5]
    print(f"{len(accepted)} tasks accepted before kill -9")
    assert len(accepted) >= THREADS, f"too few submissions before the kill ({len(accepted)}) to mean anything"

    restarted = server_factory(data_dir=srv.data_dir, FETCHML_RATE_LIMIT_PER_MINUTE=str(10**7))
    with restarted.http(keys.admin) as http:
        listed = http.get("/v1/tasks", params={"limit": 1000, "user_id": "alice"}).json()
        stored = {t["id"]: t for t in listed["tasks"]}
        offset = len(listed["tasks"])
        while offset < listed["total"]:
            page = http.get("/v1/tasks", params={"limit": 1000, "offset": offset, "user_id": "alice"}).json()
            stored.update({t["id"]: t for t in page["tasks"]})
            offset += len(page["tasks"])
        lost = [(tid, name) for tid, name in accepted if tid not in stored]
        assert not lost, f"{len(lost)} of {len(accepted)} accepted tasks are gone, e.g. {lost[:3]}"
        for tid, name in accepted:
            assert stored[tid]["job_name"] == name and stored[tid]["status"] == "queued"

        result = http.post("/v1/audit/verify").json()
        assert result["valid"] is True, result
        # Every stored task, accepted or cut off mid-answer, has exactly its one job_queued event.
        queued = http.get("/v1/audit/events", params={"event_type": "job_queued", "limit": 1000}).json()
        assert queued["total"] == len(stored)
        events = list(queued["events"])
        while len(events) < queued["total"]:
            events += http.get(
                "/v1/audit/events", params={"event_type": "job_queued", "limit": 1000, "offset": len(events)}
            ).json()["events"]
        assert sorted(e["resource"] for e in events) == sorted(f"task:{tid}" for tid in stored)

        # And the restarted server goes on appending to the same chain.
        assert http.post("/v1/tasks", json={"job_name": "after-crash"}).status_code == 201
        assert http.post("/v1/audit/verify").json()["valid"] is True
