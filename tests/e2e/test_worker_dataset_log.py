"""A real `fetchml worker` tells its dataset fetches in the task's log, the one `fetchml logs`
shows: where from, how far, verified and cached (or a cache hit, or why it failed), before the
task's own output."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.cli.conftest import assert_ok, cli_env, run
from tests.e2e.conftest import Cluster

SIZE = 5 * 1024 * 1024  # five 1 MiB chunks: 20%, 40%, ... 100%


def test_a_dataset_fetch_is_told_in_the_tasks_log(cluster: Cluster, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    data = root / "d.bin"
    data.write_bytes(bytes(range(256)) * (SIZE // 256))
    good = hashlib.sha256(data.read_bytes()).hexdigest()
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(root))
    spec = {"name": "train-set", "source": str(data), "sha256": good, "mount_path": "d.bin"}

    first = cluster.submit(entrypoint="echo ran", dataset_specs=[spec])
    assert cluster.wait_status(first, "completed", "failed")["status"] == "completed"
    lines = cluster.logs(first, worker_lines=True)
    assert lines[0] == f"fetchml: dataset train-set: fetching from {data}", lines
    progress = lines[1:-2]
    assert progress == [
        f"fetchml: dataset train-set: {p}% ({mb} MB of 5.2 MB)"
        for p, mb in ((20, "1.0"), (40, "2.1"), (60, "3.1"), (80, "4.2"), (100, "5.2"))
    ], lines
    assert lines[-2:] == ["fetchml: dataset train-set: 5.2 MB, verified sha256, cached", "ran"]
    # The same log as `fetchml logs` prints it.
    shown = assert_ok(run(["logs", first], cli_env(cluster.server, cluster.user))).stdout
    assert shown.splitlines() == lines

    again = cluster.submit(entrypoint="echo again", dataset_specs=[spec])
    assert cluster.wait_status(again, "completed", "failed")["status"] == "completed"
    assert cluster.logs(again, worker_lines=True) == [
        "fetchml: dataset train-set: cache hit (5.2 MB)",
        "again",
    ]

    # A mismatch: the log says it failed, with the task's own error, and the task never ran.
    bad = cluster.submit(entrypoint="echo never", dataset_specs=[{**spec, "sha256": "0" * 64}])
    t = cluster.wait_status(bad, "completed", "failed")
    assert t["status"] == "failed" and "does not match the expected sha256" in t["error"], t
    lines = cluster.logs(bad, worker_lines=True)
    assert lines[0] == f"fetchml: dataset train-set: fetching from {data}", lines
    assert re.fullmatch(
        rf"fetchml: dataset train-set: failed: the file at {re.escape(str(data))} does not match the "
        "expected sha256",
        lines[-1],
    ), lines
    assert "never" not in lines
    # Without worker_lines, the task's own output only (what the other tests compare).
    assert cluster.logs(bad) == [] and cluster.logs(first) == ["ran"]
