"""Tasks run by real `fetchml worker --executor local` processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Cluster
from tests.harness import REPO, base_env, free_port


def procs_of(task_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("FETCHML_TASK_ID") == task_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_task_completes_with_its_output_logs_and_artifacts(cluster: Cluster) -> None:
    cluster.start_worker("w1", "--executor", "local")
    tid = cluster.submit(
        entrypoint='sh -c \'echo first; echo "$FETCHML_TASK_ID" > "$FETCHML_OUTPUT_DIR/id.txt"; printf last\''
    )
    t = cluster.wait_status(tid, "completed", "failed")
    assert t["status"] == "completed", t
    assert t["exit_code"] == 0 and t.get("error") is None  # absent, not null
    assert t["worker_id"] == "w1" and t["started_at"] and t["ended_at"]
    assert cluster.logs(tid) == ["first", "last"]  # the last line had no newline and is kept
    assert t["output"].endswith("last")
    with cluster.server.http(cluster.admin) as http:
        arts = http.get(f"/v1/tasks/{tid}/artifacts").json()
        assert [a["path"] for a in arts] == ["id.txt"]
        assert http.get(f"/v1/tasks/{tid}/artifacts/id.txt").text.strip() == tid


def test_non_zero_exit_fails_naming_the_code(cluster: Cluster) -> None:
    cluster.start_worker("w1", "--executor", "local")
    tid = cluster.submit(entrypoint="sh -c 'echo bye; exit 3'")
    t = cluster.wait_status(tid, "completed", "failed")
    assert t["status"] == "failed" and t["exit_code"] == 3
    assert "exit code 3" in t["error"]


def test_cancel_of_a_running_task_leaves_no_process_behind(cluster: Cluster) -> None:
    cluster.start_worker("w1", "--executor", "local")
    tid = cluster.submit(entrypoint="sh -c 'sleep 1000 & sleep 1000 & echo started; wait'")
    cluster.wait_for(lambda: "started" in cluster.logs(tid), what="the task to start")
    assert len(procs_of(tid)) >= 3  # sh and its two sleeps
    with cluster.server.http(cluster.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    t = cluster.wait_status(tid, "failed", timeout=20)
    assert t["error"] == "cancelled"
    cluster.wait_for(lambda: not procs_of(tid), timeout=10, what="every process of the task to exit")


def test_graceful_worker_shutdown_kills_the_whole_group(cluster: Cluster) -> None:
    w = cluster.start_worker("w1", "--executor", "local")
    tid = cluster.submit(entrypoint="sh -c 'sleep 1000 & echo started; wait'")
    cluster.wait_for(lambda: "started" in cluster.logs(tid), what="the task to start")
    w.send_signal(signal.SIGTERM)
    w.wait(30)
    cluster.wait_for(lambda: not procs_of(tid), timeout=10, what="the task's processes to exit")


@pytest.mark.slow
def test_kill9_of_a_worker_mid_task_retries_on_another_and_fences_the_old_attempt(cluster: Cluster) -> None:
    wkey_a = cluster.server.make_key("wk-a", "worker", worker_name="wa")
    a = cluster.start_worker("wa", "--executor", "local", key=wkey_a)
    tid = cluster.submit(entrypoint="sh -c 'echo go; sleep 3; echo done'", max_retries=2)
    cluster.wait_for(lambda: "go" in cluster.logs(tid), what="attempt 1 to start on wa")
    assert cluster.task(tid)["attempt"] == 1
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    cluster.start_worker("wb", "--executor", "local")
    t = cluster.wait_status(tid, "completed", "failed", timeout=40)
    assert t["status"] == "completed", t
    assert t["retry_count"] == 1 and t["attempt"] == 2 and t["worker_id"] == "wb"
    # The first worker comes back late with news of attempt 1: refused.
    with cluster.server.http(wkey_a) as http:
        r = http.post(f"/v1/tasks/{tid}/report", json={"attempt": 1, "status": "completed", "exit_code": 0})
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
        r = http.post(f"/v1/tasks/{tid}/logs", json={"attempt": 1, "start_line": 0, "lines": ["stale"]})
        assert r.status_code == 409
    assert "stale" not in cluster.logs(tid)


def test_dataset_sha256_mismatch_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(tmp_path))
    data = tmp_path / "data.bin"
    data.write_bytes(b"the real bytes")
    good = hashlib.sha256(data.read_bytes()).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()
    bad = cluster.submit(
        entrypoint="true",
        dataset_specs=[{"name": "d", "source": str(data), "sha256": wrong, "mount_path": "data/d.bin"}],
    )
    t = cluster.wait_status(bad, "completed", "failed")
    assert t["status"] == "failed" and "does not match the expected sha256" in t["error"], t
    assert good not in t["error"]  # the real digest is never told
    ok = cluster.submit(
        entrypoint="cat data/d.bin",
        dataset_specs=[{"name": "d", "source": f"file://{data}", "sha256": good, "mount_path": "data/d.bin"}],
    )
    t = cluster.wait_status(ok, "completed", "failed")
    assert t["status"] == "completed", t
    assert cluster.logs(ok) == ["the real bytes"]


def test_gpus_are_assigned_by_index_and_never_shared(cluster: Cluster) -> None:
    cluster.start_worker(
        "gpubox", "--executor", "local", "--gpus", "2", "--gpu-type", "T4", "--batch-slots", "3"
    )
    cmd = "sh -c 'echo cvd=$CUDA_VISIBLE_DEVICES; sleep 1.5'"
    ids = [cluster.submit(entrypoint=cmd, gpu=1) for _ in range(3)]
    def two_running_one_queued() -> list[dict[str, Any]] | None:
        # Judged in one look: by a later one the first two may be done and the third running.
        tasks = [cluster.task(i) for i in ids]
        statuses = sorted(t["status"] for t in tasks)
        return tasks if statuses == ["queued", "running", "running"] else None

    tasks = cluster.wait_for(two_running_one_queued, what="two tasks running, the third queued")
    running = [t for t in tasks if t["status"] == "running"]
    assert sorted(g for t in running for g in t["assigned_gpus"]) == [0, 1]
    for i in ids:
        cluster.wait_status(i, "completed", timeout=30)
    seen = {cluster.task(i)["assigned_gpus"][0]: cluster.logs(i)[0] for i in ids[:2]}
    assert all(line == f"cvd={gpu}" for gpu, line in seen.items())
    mismatched = cluster.submit(entrypoint="true", gpu=1, gpu_type="H100")
    time.sleep(1.0)
    assert cluster.task(mismatched)["status"] == "queued"


@pytest.mark.slow
def test_fetchml_run_on_a_fresh_machine_streams_output_and_returns_the_exit_code(tmp_path: Path) -> None:
    env = base_env(
        FETCHML_DATA_DIR=str(tmp_path / "data"),
        FETCHML_CONFIG=str(tmp_path / "none.toml"),
        FETCHML_SERVER_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
    )
    ok = subprocess.run(
        # --output: the default, ./fetchml-runs/<task id>, would be in the repository.
        [
            sys.executable,
            "-m",
            "fetchml",
            "run",
            "--output",
            str(tmp_path / "runs"),
            "examples/linreg/train.py",
            "--epochs",
            "3",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "epoch   3" in ok.stdout and "running an embedded server" in ok.stderr
    assert (tmp_path / "runs" / "model.json").is_file(), ok.stderr
    failing = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetchml",
            "run",
            "--no-download",
            "examples/linreg/train.py",
            "--epochs",
            "1",
            "--fail-below",
            "0",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failing.returncode == 1, failing.stderr
    assert "failing" in failing.stdout
    assert os.path.exists(tmp_path / "data" / "fetchml.db")
