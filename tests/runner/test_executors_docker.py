"""DockerExecutor against a real Docker daemon and the local busybox image (tests/dockerutil.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml.runner.executors.base import ExecutorError, ExitStatus
from fetchml.runner.executors.docker import DockerExecutor, docker_available
from tests.dockerutil import MISSING_IMAGE, TEST_IMAGE
from tests.runner.exec_kit import docker_spec_for as spec_for
from tests.runner.exec_kit import finish

REPO = Path(__file__).resolve().parents[2]


def labelled(client: Any, label: str, value: str, **filters: Any) -> list[Any]:
    return list(
        client.containers.list(all=True, filters={"label": f"{label}={value}", **filters}, ignore_removed=True)
    )


@pytest.fixture
def worker_id(docker_client: Any) -> Iterator[str]:
    """A worker id of its own per test; whatever the test leaves labelled with it is removed."""
    wid = "w-test-" + uuid.uuid4().hex[:10]
    yield wid
    for c in labelled(docker_client, "fetchml.worker", wid):
        c.remove(force=True)


@pytest.fixture
def executor(docker_client: Any) -> DockerExecutor:
    return DockerExecutor(client=docker_client, stop_grace=2)


# -- no daemon needed ----------------------------------------------------------------------------


def test_importing_the_runner_does_not_load_docker() -> None:
    code = (
        "import sys\n"
        "import fetchml.runner, fetchml.runner.executors, fetchml.runner.executors.base\n"
        "import fetchml.runner.executors.local, fetchml.runner.executors.docker\n"
        "import fetchml.runner.gpus, fetchml.runner.capabilities, fetchml.runner.entrypoint\n"
        "print(sorted({'docker', 'pynvml'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_docker_available_is_false_without_a_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    t0 = time.monotonic()
    assert docker_available(timeout=1) is False
    assert time.monotonic() - t0 < 5


FIXTURE_PROBE = """
from tests.dockerutil import docker_client


def test_probe(docker_client):
    pass
"""


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", "1 error"), ("1", "1 error"), ("yes", "1 error"), ("", "1 skipped"), ("false", "1 skipped"), ("0", "1 skipped")],
)
def test_docker_client_fixture_fails_in_ci_and_skips_elsewhere(tmp_path: Path, ci: str, outcome: str) -> None:
    (tmp_path / "test_probe.py").write_text(FIXTURE_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock", PYTHONPATH=str(REPO), CI=ci)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert outcome in proc.stdout, proc.stdout
    if outcome == "1 error":
        assert "required in CI: Docker is not reachable" in proc.stdout


# -- with a daemon -------------------------------------------------------------------------------


@pytest.mark.docker
def test_docker_available_with_the_daemon_up(docker_client: Any) -> None:
    assert docker_available() is True


@pytest.mark.docker
def test_completes_with_its_output(tmp_path: Path, executor: DockerExecutor, worker_id: str) -> None:
    script = "echo one; sleep 0.2; echo two >&2; sleep 0.2; printf 'caf\\303\\251\\nlast without newline'"
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", script], worker_id))
    lines, status = finish(execution)
    assert lines == ["one", "two", "café", "last without newline"]
    assert status == ExitStatus(exit_code=0)
    execution.cleanup()
    assert execution.wait(0) == status  # still known after the container is gone


@pytest.mark.docker
def test_a_last_line_written_just_before_exit_is_not_lost(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    """Docker ends a follow stream when the container stops, sometimes before its final entry
    (a line without newline) is written: here about 4 runs in 10 without the catch-up read."""
    for i in range(6):
        execution = executor.start(
            spec_for(tmp_path, ["sh", "-c", f"echo one; sleep 0.1; printf 'last {i}'"], worker_id)
        )
        lines, status = finish(execution)
        assert (lines, status.exit_code) == (["one", f"last {i}"], 0), f"run {i}"
        execution.cleanup()


@pytest.mark.docker
def test_exit_3_fails_with_the_code(tmp_path: Path, executor: DockerExecutor, worker_id: str) -> None:
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", "echo failing; exit 3"], worker_id))
    lines, status = finish(execution)
    assert lines == ["failing"]
    assert status.exit_code == 3 and status.error == "exit code 3"
    assert not status.oom_killed and not status.cancelled


@pytest.mark.docker
def test_container_is_labelled_named_and_limited(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    spec = spec_for(tmp_path, ["sleep", "1000"], worker_id, attempt=3, cpu=1, memory_gb=1)
    execution = executor.start(spec)
    try:
        container = docker_client.containers.get(execution.id)
        assert container.labels == {
            "fetchml.task": spec.task_id,
            "fetchml.worker": worker_id,
            "fetchml.attempt": "3",
            "fetchml.server": "",  # the spec names no server id
        }
        assert container.name == f"fetchml-{spec.task_id[:12]}-3"
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Memory"] == host["MemorySwap"] == 1024**3  # no swap beyond the limit
        assert not host.get("DeviceRequests")  # no GPU asked for, none requested
        assert container.attrs["Config"]["WorkingDir"] == "/workspace/snapshot"
        assert container.status == "running"
        assert execution.wait(0.2) is None
    finally:
        execution.stop(1)
        execution.cleanup()


@pytest.mark.docker
def test_stop_ends_a_running_container_and_cleanup_removes_it(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    spec = spec_for(tmp_path, ["sh", "-c", "echo started; sleep 1000"], worker_id)
    execution = executor.start(spec)
    lines = execution.lines()
    assert next(lines) == "started"
    t0 = time.monotonic()
    execution.stop(grace=2)
    assert time.monotonic() - t0 < 2 + 4
    assert labelled(docker_client, "fetchml.task", spec.task_id, status="running") == []
    status = execution.wait(10)
    assert status is not None and status.cancelled and status.error == "cancelled"
    assert list(lines) == []
    execution.stop(2)  # idempotent
    execution.cleanup()
    assert labelled(docker_client, "fetchml.task", spec.task_id) == []


@pytest.mark.docker
def test_stop_kills_a_task_that_ignores_sigterm_after_the_grace(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    spec = spec_for(tmp_path, ["sh", "-c", "trap '' TERM; echo started; sleep 1000 & wait"], worker_id)
    execution = executor.start(spec)
    assert next(execution.lines()) == "started"
    t0 = time.monotonic()
    execution.stop(grace=1)
    took = time.monotonic() - t0
    assert 0.9 <= took < 1 + 4, took
    status = execution.wait(10)
    assert status is not None and status.cancelled and status.exit_code == 137
    assert labelled(docker_client, "fetchml.task", spec.task_id, status="running") == []
    execution.cleanup()


EAT_256M = "dd if=/dev/zero of=/dev/null bs=256M count=1"  # dd allocates and touches a 256 MiB buffer


@pytest.mark.docker
@pytest.mark.parametrize(
    ("command", "exit_code"),
    [
        # the task's main process is the one killed: docker's init reports 128+SIGKILL
        (EAT_256M.split(), 137),
        # a helper process is killed and the task fails because of it (a data loader worker)
        (["sh", "-c", f"echo allocating; {EAT_256M} || exit 1; echo survived"], 1),
    ],
    ids=["main-process", "child-process"],
)
def test_memory_limit_is_enforced_and_reported_as_out_of_memory(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, command: list[str], exit_code: int
) -> None:
    execution = executor.start(spec_for(tmp_path, command, worker_id, memory_gb=64 / 1024))  # 64 MiB
    lines, status = finish(execution)
    assert "survived" not in lines
    assert status == ExitStatus(
        exit_code=exit_code,
        error="out of memory: killed after exceeding the memory limit of 0.0625 GB",
        oom_killed=True,
    )
    execution.cleanup()


@pytest.mark.docker
def test_a_task_that_survives_an_oom_kill_of_a_helper_succeeds(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    command = ["sh", "-c", f"{EAT_256M}; echo survived"]
    execution = executor.start(spec_for(tmp_path, command, worker_id, memory_gb=64 / 1024))
    lines, status = finish(execution)
    assert "survived" in lines  # (sh's "Killed" is on stderr: Docker keeps no order across streams)
    assert status == ExitStatus(exit_code=0)
    execution.cleanup()


@pytest.mark.docker
def test_exit_137_without_oom_or_stop_is_reported_as_killed(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", "kill -9 $$"], worker_id, memory_gb=1))
    _, status = finish(execution)
    assert status == ExitStatus(exit_code=137, error="killed (exit code 137)")
    execution.cleanup()


@pytest.mark.docker
def test_missing_image_is_an_executor_error_naming_it(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    t0 = time.monotonic()
    with pytest.raises(ExecutorError) as err:
        executor.start(spec_for(tmp_path, ["true"], worker_id, image=MISSING_IMAGE))
    assert time.monotonic() - t0 < 30
    assert f"image {MISSING_IMAGE!r} not found locally and could not be pulled" in str(err.value)
    assert labelled(docker_client, "fetchml.worker", worker_id) == []


@pytest.mark.docker
def test_no_image_at_all_is_an_executor_error(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    with pytest.raises(ExecutorError, match="no Docker image"):
        executor.start(spec_for(tmp_path, ["true"], worker_id, image=None))


@pytest.mark.docker
def test_default_image_is_used_when_the_task_names_none(
    tmp_path: Path, docker_client: Any, worker_id: str
) -> None:
    executor = DockerExecutor(client=docker_client, default_image=TEST_IMAGE)
    execution = executor.start(spec_for(tmp_path, ["echo", "default"], worker_id, image=None))
    assert finish(execution) == (["default"], ExitStatus(exit_code=0))
    execution.cleanup()


@pytest.mark.docker
def test_workdir_outside_the_workspace_is_an_executor_error(
    tmp_path: Path, executor: DockerExecutor, worker_id: str
) -> None:
    with pytest.raises(ExecutorError, match="outside the workspace"):
        executor.start(spec_for(tmp_path, ["true"], worker_id, workdir=tmp_path))


@pytest.mark.docker
def test_gpus_on_a_daemon_without_nvidia_runtime_fail_cleanly(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    # GPU 99 exists on no machine: without the NVIDIA runtime no device driver is found, with it
    # the device is unknown. Either way the start fails cleanly, so no skip on any daemon.
    with pytest.raises(ExecutorError, match=r"cannot (create|start) a container"):
        executor.start(spec_for(tmp_path, ["true"], worker_id, gpus=(99,)))
    assert labelled(docker_client, "fetchml.worker", worker_id) == []  # nothing half-made is left


def test_gpu_request_names_the_assigned_devices(tmp_path: Path) -> None:
    """The create arguments (a pure function): specific host indices to Docker, never "all";
    inside, the devices are renumbered from 0, so CUDA_VISIBLE_DEVICES counts from 0."""
    ex = DockerExecutor(client=object())
    config = ex.container_config(spec_for(tmp_path, ["nvidia-smi"], "w", gpus=(1, 3)), TEST_IMAGE)
    [request] = config["device_requests"]
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] in (0, None)
    assert config["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert config["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    config = ex.container_config(spec_for(tmp_path, ["true"], "w"), TEST_IMAGE)
    assert "device_requests" not in config
    assert config["environment"]["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.docker
def test_workspace_mount_and_path_rewriting(tmp_path: Path, executor: DockerExecutor, worker_id: str) -> None:
    spec = spec_for(tmp_path, ["sh"], worker_id)
    ws = spec.workspace
    (spec.workdir / "run.sh").write_text(
        'mkdir -p "$OUT_DIR"\n'
        'pwd > "$OUT_DIR/x.txt"\n'
        'echo "$OUT_DIR|$DATA_PATH|$PLAIN|$LOOKALIKE" >> "$OUT_DIR/x.txt"\n'
        'echo "$1" >> "$OUT_DIR/x.txt"\n'
        'cat "$DATA_PATH/input.txt"\n'
    )
    (ws / "data").mkdir()
    (ws / "data" / "input.txt").write_text("from the host\n")
    spec = spec_for(
        tmp_path,
        ["sh", str(spec.workdir / "run.sh"), f"--out={ws}/out"],
        worker_id,
        env={
            "OUT_DIR": str(ws / "out"),
            "DATA_PATH": str(ws / "data"),
            "PLAIN": "no path here",
            "LOOKALIKE": f"{ws}-other/x",  # shares a prefix, is not under the workspace
        },
    )
    execution = executor.start(spec)
    lines, status = finish(execution)
    assert status == ExitStatus(exit_code=0), lines
    assert lines == ["from the host"]
    written = (ws / "out" / "x.txt").read_text().splitlines()
    assert written == [
        "/workspace/snapshot",
        f"/workspace/out|/workspace/data|no path here|{ws}-other/x",
        "--out=/workspace/out",
    ]
    execution.cleanup()


@pytest.mark.docker
def test_runs_as_the_configured_user(tmp_path: Path, docker_client: Any, worker_id: str) -> None:
    executor = DockerExecutor(client=docker_client, user="4321:4322")
    spec = spec_for(tmp_path, ["sh", "-c", "id -u; id -g; touch /workspace/mine"], worker_id)
    spec.workspace.chmod(0o777)
    execution = executor.start(spec)
    assert finish(execution) == (["4321", "4322"], ExitStatus(exit_code=0))
    stat = (spec.workspace / "mine").stat()
    assert (stat.st_uid, stat.st_gid) == (4321, 4322)
    execution.cleanup()


@pytest.mark.docker
def test_remove_orphans_removes_only_what_is_not_live(
    tmp_path: Path, executor: DockerExecutor, docker_client: Any
) -> None:
    worker = "w-orphan"
    for c in labelled(docker_client, "fetchml.worker", worker):  # a previous run's leftovers
        c.remove(force=True)
    other_worker = "w-other-" + uuid.uuid4().hex[:8]
    live = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker, task_id="a" * 32, attempt=2))
    orphan = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker, task_id="b" * 32, attempt=1))
    stale_attempt = executor.start(spec_for(tmp_path, ["true"], worker, task_id="a" * 32, attempt=1))
    elsewhere = executor.start(spec_for(tmp_path, ["sleep", "1000"], other_worker, task_id="c" * 32))
    try:
        stale_attempt.wait(30)  # exited containers are leftovers too
        removed = executor.remove_orphans(worker, {("a" * 32, 2)})
        assert sorted(removed) == sorted([orphan.id, stale_attempt.id])
        assert [c.id for c in labelled(docker_client, "fetchml.worker", worker)] == [live.id]
        assert [c.id for c in labelled(docker_client, "fetchml.worker", other_worker)] == [elsewhere.id]
        assert executor.remove_orphans(worker, {("a" * 32, 2)}) == []
    finally:
        for c in labelled(docker_client, "fetchml.worker", worker) + labelled(
            docker_client, "fetchml.worker", other_worker
        ):
            c.remove(force=True)


@pytest.mark.docker
def test_shutdown_stops_every_running_container(tmp_path: Path, docker_client: Any, worker_id: str) -> None:
    executor = DockerExecutor(client=docker_client, stop_grace=1)
    executions = [executor.start(spec_for(tmp_path, ["sleep", "1000"], worker_id)) for _ in range(2)]
    t0 = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - t0 < 8
    assert labelled(docker_client, "fetchml.worker", worker_id, status="running") == []
    for e in executions:
        status = e.wait(10)
        assert status is not None and status.cancelled
        e.cleanup()


@pytest.mark.docker
def test_attempt_leftover_with_the_same_name_is_replaced(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    spec = spec_for(tmp_path, ["echo", "second"], worker_id)
    first = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker_id, task_id=spec.task_id))
    second = executor.start(spec)  # same task and attempt on this worker: a leftover of a crash
    assert finish(second) == (["second"], ExitStatus(exit_code=0))
    assert [c.id for c in labelled(docker_client, "fetchml.task", spec.task_id)] == [second.id]
    assert first.id != second.id
    second.cleanup()


@pytest.mark.docker
def test_readonly_mounts_cannot_be_written_while_the_workspace_can(
    tmp_path: Path, executor: DockerExecutor, worker_id: str, docker_client: Any
) -> None:
    cached = tmp_path / "cache" / "entry"
    cached.parent.mkdir()
    cached.write_bytes(b"verified dataset\n")
    spec = spec_for(tmp_path, ["true"], worker_id)
    (spec.workdir / "data").mkdir()
    (spec.workdir / "data" / "d.bin").touch()  # the placeholder the worker leaves
    script = (
        "cat data/d.bin;"
        "echo changed > data/d.bin && echo write-ok;"
        "echo more >> data/d.bin && echo append-ok;"
        "rm -f data/d.bin && echo rm-ok;"
        "echo fine > data/other.txt && echo other-ok;"
        "echo out > /workspace/out.txt && echo ws-ok"
    )
    spec = spec_for(
        tmp_path,
        ["sh", "-c", script],
        worker_id,
        readonly_mounts=((cached, "data/d.bin"),),
        task_id=spec.task_id,
    )
    execution = executor.start(spec)
    lines, status = finish(execution)
    assert status == ExitStatus(exit_code=0), lines
    # stdout and stderr come through two pipes: their lines may interleave in either order.
    assert "verified dataset" in lines, lines
    assert [line for line in lines if line.endswith("-ok")] == ["other-ok", "ws-ok"], lines
    assert sum("Read-only file system" in line for line in lines) >= 2, lines
    mounts = {m["Destination"]: m for m in docker_client.containers.get(execution.id).attrs["Mounts"]}
    assert mounts["/workspace/snapshot/data/d.bin"]["RW"] is False
    assert mounts["/workspace"]["RW"] is True
    execution.cleanup()
    assert cached.read_bytes() == b"verified dataset\n"
    assert (spec.workdir / "data" / "other.txt").read_text() == "fine\n"
    assert (spec.workspace / "out.txt").read_text() == "out\n"


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "a/../../x", "", "a//b", "./a"])
def test_readonly_mount_paths_must_stay_plain_and_inside(tmp_path: Path, rel: str) -> None:
    cached = tmp_path / "entry"
    cached.write_bytes(b"x")
    spec = spec_for(tmp_path, ["true"], "w", readonly_mounts=((cached, rel),))
    with pytest.raises(ExecutorError, match="read-only mount path"):
        DockerExecutor(client=object()).container_config(spec, TEST_IMAGE)


def test_a_readonly_mount_over_a_link_in_the_workspace_is_refused(tmp_path: Path) -> None:
    cached = tmp_path / "entry"
    cached.write_bytes(b"x")
    spec = spec_for(tmp_path, ["true"], "w", readonly_mounts=((cached, "d.bin"),))
    (spec.workdir / "d.bin").symlink_to("/etc/passwd")  # planted by the snapshot
    with pytest.raises(ExecutorError, match="is a link"):
        DockerExecutor(client=object()).container_config(spec, TEST_IMAGE)
