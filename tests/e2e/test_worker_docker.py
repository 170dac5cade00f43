"""Tasks run by a real `fetchml worker --executor docker` against the local Docker daemon."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.dockerutil import TEST_IMAGE
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.docker


def labelled(docker_client: Any, task_id: str, *, running_only: bool) -> list[Any]:
    return list(
        docker_client.containers.list(
            all=not running_only, filters={"label": f"fetchml.task={task_id}"}, ignore_removed=True
        )
    )


@pytest.fixture
def docker_cluster(cluster: Cluster, docker_client: Any) -> Cluster:
    # A wide running-report window, which the docker executor must not wait out (see below).
    cluster.start_worker(
        "dw", "--executor", "docker", "--default-image", TEST_IMAGE, "--running-report-window", "30"
    )
    return cluster


def test_a_container_task_completes_with_its_output_and_is_removed(
    docker_cluster: Cluster, docker_client: Any
) -> None:
    c = docker_cluster
    tid = c.submit(
        entrypoint="sh -c 'echo in-container; echo $FETCH_ML_SNAPSHOT_DIR; echo out > $FETCHML_OUTPUT_DIR/o.txt'"
    )
    t = c.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "completed", t
    lines = c.logs(tid)
    assert lines[0] == "in-container" and lines[1].startswith("/workspace")
    with c.server.http(c.admin) as http:
        assert [a["path"] for a in http.get(f"/v1/tasks/{tid}/artifacts").json()] == ["o.txt"]
    c.wait_for(
        lambda: not labelled(docker_client, tid, running_only=False),
        timeout=15,
        what="the container's removal",
    )


def test_exit_3_fails_with_the_code(docker_cluster: Cluster) -> None:
    tid = docker_cluster.submit(entrypoint="sh -c 'exit 3'")
    t = docker_cluster.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "failed" and t["exit_code"] == 3 and "exit code 3" in t["error"]
    # A container reports running on its own, however wide the window (local processes only):
    # its start is stamped before its end, and it did not wait 30 s for the window.
    moves = docker_cluster.server.task_transitions(tid)
    assert ("preparing", "running") in moves and t["started_at"] < t["ended_at"], (moves, t)


def test_cancel_stops_the_container_within_the_grace_period(
    docker_cluster: Cluster, docker_client: Any
) -> None:
    import time

    c = docker_cluster
    tid = c.submit(entrypoint="sh -c 'echo started; sleep 1000'")
    c.wait_for(lambda: "started" in c.logs(tid), timeout=60, what="the container to start")
    assert labelled(docker_client, tid, running_only=True)
    t0 = time.monotonic()
    with c.server.http(c.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    t = c.wait_status(tid, "failed", timeout=20)
    # Heartbeat (0.5 s) + grace (2 s) + reporting: well inside 10 s.
    assert time.monotonic() - t0 < 10
    assert t["error"] == "cancelled"
    assert not labelled(docker_client, tid, running_only=True)


def test_memory_limit_is_enforced_and_reported(docker_cluster: Cluster) -> None:
    # 1 GB limit; dd needs a 1.5 GB buffer.
    tid = docker_cluster.submit(entrypoint="dd if=/dev/zero of=/dev/null bs=1500M count=1", memory_gb=1)
    t = docker_cluster.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "failed", t
    assert "out of memory" in t["error"]


def test_a_missing_image_fails_naming_it(docker_cluster: Cluster) -> None:
    tid = docker_cluster.submit(entrypoint="true", image="fetchml-test-missing:never")
    t = docker_cluster.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "failed" and "fetchml-test-missing:never" in t["error"]


def test_orphaned_containers_are_removed_when_the_worker_restarts(
    cluster: Cluster, docker_client: Any
) -> None:
    # The installation's id, as the server would create it: orphans must carry it to be removed.
    cluster.server.db_exec("INSERT INTO server_meta (key, value) VALUES ('server_id', 'srv-e2e-dw2')")
    orphan = docker_client.containers.run(
        TEST_IMAGE,
        ["sleep", "1000"],
        detach=True,
        labels={
            "fetchml.task": "t-orphan",
            "fetchml.worker": "dw2",
            "fetchml.attempt": "1",
            "fetchml.server": "srv-e2e-dw2",
        },
    )
    other = docker_client.containers.run(
        TEST_IMAGE,
        ["sleep", "1000"],
        detach=True,
        labels={"fetchml.task": "t-other", "fetchml.worker": "someone-else", "fetchml.attempt": "1"},
    )
    # Same worker name, another server on this host: not ours either.
    foreign = docker_client.containers.run(
        TEST_IMAGE,
        ["sleep", "1000"],
        detach=True,
        labels={
            "fetchml.task": "t-foreign",
            "fetchml.worker": "dw2",
            "fetchml.attempt": "1",
            "fetchml.server": "srv-another-one",
        },
    )
    try:
        cluster.start_worker("dw2", "--executor", "docker", "--default-image", TEST_IMAGE)
        cluster.wait_for(
            # sparse: no inspect per container, which would 404 on the one being removed.
            lambda: (
                not docker_client.containers.list(
                    all=True,
                    sparse=True,
                    filters={"label": ["fetchml.worker=dw2", "fetchml.server=srv-e2e-dw2"]},
                )
            ),
            timeout=20,
            what="the orphan's removal",
        )
        for ctr in (other, foreign):
            ctr.reload()
            assert ctr.status == "running"  # another worker's containers are not ours to touch
    finally:
        for ctr in (orphan, other, foreign):
            with contextlib.suppress(Exception):
                ctr.remove(force=True)
