"""LocalExecutor against real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fetchml.runner.executors.base import ExecSpec, ExecutorError, ExitStatus
from fetchml.runner.executors.local import (
    LABEL_ATTEMPT,
    LABEL_SERVER,
    LABEL_TASK,
    LABEL_WORKER,
    LocalExecutor,
)
from tests.runner.exec_kit import finish
from tests.runner.exec_kit import spec_for as exec_spec

PY = sys.executable


def spec_for(tmp_path: Path, command: list[str], worker_id: str = "w-local-test", **kw: Any) -> ExecSpec:
    return exec_spec(tmp_path, command, worker_id, **kw)


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (dead, only waiting to be reaped)."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def executor() -> Iterator[LocalExecutor]:
    ex = LocalExecutor()
    yield ex
    ex.shutdown(0)  # nothing a failed test started may outlive it


def test_runs_to_exit_0_with_every_line_in_order(tmp_path: Path, executor: LocalExecutor) -> None:
    script = "echo one; echo two >&2; echo; printf 'caf\\303\\251 \\377\\nlast without newline'"
    lines, status = finish(executor.start(spec_for(tmp_path, ["sh", "-c", script])))
    assert lines == ["one", "two", "", "café \ufffd", "last without newline"]
    assert status == ExitStatus(exit_code=0, error=None, oom_killed=False, cancelled=False)


def test_many_lines_arrive_complete_and_in_order(tmp_path: Path, executor: LocalExecutor) -> None:
    code = "import sys\nfor i in range(20000): print(i, file=sys.stderr if i % 3 else sys.stdout, flush=True)"
    lines, status = finish(executor.start(spec_for(tmp_path, [PY, "-c", code])))
    assert lines == [str(i) for i in range(20000)]
    assert status.exit_code == 0


def test_exit_code_3_is_a_failure_naming_the_code(tmp_path: Path, executor: LocalExecutor) -> None:
    _, status = finish(executor.start(spec_for(tmp_path, ["sh", "-c", "echo bad; exit 3"])))
    assert status.exit_code == 3
    assert status.error == "exit code 3"
    assert not status.cancelled and not status.oom_killed


def test_death_by_signal_is_reported(tmp_path: Path, executor: LocalExecutor) -> None:
    _, status = finish(executor.start(spec_for(tmp_path, ["sh", "-c", "kill -9 $$"])))
    assert status.exit_code == 128 + 9
    assert status.error is not None and "killed by signal 9" in status.error
    assert not status.cancelled


def test_wait_with_timeout_returns_none_while_running(tmp_path: Path, executor: LocalExecutor) -> None:
    execution = executor.start(spec_for(tmp_path, ["sleep", "1000"]))
    t0 = time.monotonic()
    assert execution.wait(0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 3
    execution.stop(2)
    assert execution.wait(5) is not None


def test_stop_kills_the_whole_group_including_grandchildren(tmp_path: Path, executor: LocalExecutor) -> None:
    # Children and a grandchild (sh -> sh -> sleep), all in the task's process group.
    script = "sleep 1000 & sleep 1000 & sh -c 'sleep 1000 & wait' & echo ready; wait"
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", script]))
    lines = execution.lines()
    assert next(lines) == "ready"
    deadline = time.monotonic() + 5
    while len(live_members(execution.pgid)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = live_members(execution.pgid)
    assert len(members) == 5, members  # sh, 2 sleeps, inner sh and its sleep

    t0 = time.monotonic()
    execution.stop(grace=3)
    took = time.monotonic() - t0
    assert took < 3, f"stop took {took:.1f}s: SIGTERM should have ended every process at once"
    assert live_members(execution.pgid) == []
    assert not any(is_alive(pid) for pid in members)
    status = execution.wait(5)
    assert status is not None and status.cancelled and status.error == "cancelled"
    assert list(lines) == []  # the stream ends


def test_stop_sigkills_what_ignores_sigterm_after_grace(tmp_path: Path, executor: LocalExecutor) -> None:
    # An ignored signal stays ignored across fork and exec: every process here ignores SIGTERM.
    script = "trap '' TERM; sleep 1000 & sh -c 'sleep 1000 & wait' & echo ready; wait"
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", script]))
    assert next(execution.lines()) == "ready"
    time.sleep(0.2)
    members = live_members(execution.pgid)
    assert len(members) >= 3

    t0 = time.monotonic()
    execution.stop(grace=1)
    took = time.monotonic() - t0
    assert 0.9 <= took < 4, f"stop took {took:.1f}s, expected the 1 s grace then SIGKILL"
    assert live_members(execution.pgid) == []
    assert not any(is_alive(pid) for pid in members)
    status = execution.wait(5)
    assert status is not None and status.cancelled


def test_stop_also_kills_descendants_that_left_the_group(tmp_path: Path, executor: LocalExecutor) -> None:
    code = textwrap.dedent(
        """
        import subprocess, time
        p = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(1000)
        """
    )
    execution = executor.start(spec_for(tmp_path, [PY, "-c", code]))
    escaped = int(next(execution.lines()))
    assert os.getpgid(escaped) != execution.pgid
    execution.stop(grace=2)
    assert not is_alive(escaped)


def test_leftovers_die_with_the_main_process(tmp_path: Path, executor: LocalExecutor) -> None:
    """Like a container: when the task's main process exits, its background children go too,
    and lines() ends instead of waiting for them to close the pipe."""
    execution = executor.start(spec_for(tmp_path, ["sh", "-c", "sleep 1000 & echo $!; sleep 0.2"]))
    lines = execution.lines()
    leftover = int(next(lines))
    status = execution.wait(10)
    assert status == ExitStatus(exit_code=0)
    deadline = time.monotonic() + 3
    while is_alive(leftover) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(leftover)
    assert live_members(execution.pgid) == []
    assert list(lines) == []


def test_stop_is_idempotent_and_harmless_after_exit(tmp_path: Path, executor: LocalExecutor) -> None:
    execution = executor.start(spec_for(tmp_path, ["true"]))
    _, status = finish(execution)
    execution.stop(1)
    execution.stop(1)
    execution.cleanup()
    assert execution.wait(0) == status == ExitStatus(exit_code=0)


def test_shutdown_stops_every_execution_at_once(tmp_path: Path) -> None:
    ex = LocalExecutor(stop_grace=1)
    # Both ignore SIGTERM, so each needs its full grace: in parallel that is ~1 s, not ~2 s.
    executions = [
        ex.start(spec_for(tmp_path, ["sh", "-c", "trap '' TERM; sleep 1000 & echo up; wait"]))
        for _ in range(2)
    ]
    for e in executions:
        assert next(e.lines()) == "up"
    t0 = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - t0 < 1.9
    for e in executions:
        assert live_members(e.pgid) == []
        status = e.wait(5)
        assert status is not None and status.cancelled


def test_cuda_visible_devices_are_the_assigned_indices(tmp_path: Path, executor: LocalExecutor) -> None:
    cmd = ["sh", "-c", 'echo "[$CUDA_VISIBLE_DEVICES] $CUDA_DEVICE_ORDER"']
    lines, _ = finish(executor.start(spec_for(tmp_path, cmd, gpus=(1, 3))))
    assert lines == ["[1,3] PCI_BUS_ID"]
    # A task's own CUDA_VISIBLE_DEVICES cannot widen its assignment.
    lines, _ = finish(
        executor.start(spec_for(tmp_path, cmd, gpus=(2,), env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}))
    )
    assert lines == ["[2] PCI_BUS_ID"]


def test_no_gpus_means_an_empty_cuda_visible_devices(
    tmp_path: Path, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the worker's own must not leak through
    code = "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"
    lines, _ = finish(executor.start(spec_for(tmp_path, [PY, "-c", code])))
    assert lines == ["''"]


def test_cwd_and_env_are_applied(
    tmp_path: Path, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FETCHML_API_KEY", "fml_secret_of_the_worker")
    monkeypatch.setenv("FETCHML_TEST_INHERITED", "from-worker")
    spec = spec_for(
        tmp_path,
        [
            "sh",
            "-c",
            'pwd; echo "$GREETING"; echo "$FETCHML_TEST_INHERITED"; echo "key=${FETCHML_API_KEY-unset}"',
        ],
        env={"GREETING": "hello world"},
    )
    lines, status = finish(executor.start(spec))
    # The worker's environment is not the task's: only the allow-list and the spec's variables.
    assert lines == [str(spec.workdir), "hello world", "", "key=unset"]
    assert status.exit_code == 0


def test_task_environment_is_an_allow_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETCHML_API_KEY", "fml_secret_of_the_worker")
    monkeypatch.setenv("FETCHML_DATABASE_URL", "postgresql+psycopg://fetchml:hunter2@db/fetchml")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-cloud-secret")
    monkeypatch.setenv("OPERATOR_CHOSEN", "passed")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    ex = LocalExecutor(pass_env=("OPERATOR_CHOSEN", "FETCHML_API_KEY"))
    try:
        spec = spec_for(tmp_path, ["env"], env={"FROM_SPEC": "1"}, gpus=(1,))
        lines, status = finish(ex.start(spec))
    finally:
        ex.shutdown(0)
    assert status.exit_code == 0
    env = dict(line.split("=", 1) for line in lines)
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "CUDA_HOME",
        "OPERATOR_CHOSEN",
        "FROM_SPEC",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        LABEL_WORKER,
        LABEL_SERVER,
        LABEL_TASK,
        LABEL_ATTEMPT,
    } | ({"PWD"} if "PWD" in env else set())
    assert env["HOME"] == os.environ["HOME"] and env["OPERATOR_CHOSEN"] == "passed"
    assert env["PATH"].split(":")[0] == os.path.dirname(sys.executable)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "fml_secret" not in "\n".join(lines)  # even when an operator names it


def test_run_as_is_refused_for_root_and_unknown_users() -> None:
    with pytest.raises(ExecutorError, match="not root"):
        LocalExecutor(run_as="root")
    with pytest.raises(ExecutorError, match="no such user"):
        LocalExecutor(run_as="no-such-user-fetchml-xyz")


def test_missing_command_is_an_executor_error(tmp_path: Path, executor: LocalExecutor) -> None:
    with pytest.raises(ExecutorError, match=r"cannot start no-such-command-xyz --flag: No such file"):
        executor.start(spec_for(tmp_path, ["no-such-command-xyz", "--flag"]))


def test_command_that_is_not_executable_is_an_executor_error(tmp_path: Path, executor: LocalExecutor) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    with pytest.raises(ExecutorError, match=r"cannot start .*not-executable\.sh: Permission denied"):
        executor.start(spec_for(tmp_path, [str(script)]))


def test_missing_workdir_is_an_executor_error(tmp_path: Path, executor: LocalExecutor) -> None:
    spec = spec_for(tmp_path, ["true"], workdir=tmp_path / "nowhere")
    with pytest.raises(ExecutorError, match="nowhere"):
        executor.start(spec)


def test_empty_command_is_an_executor_error(tmp_path: Path, executor: LocalExecutor) -> None:
    with pytest.raises(ExecutorError, match="command is empty"):
        executor.start(spec_for(tmp_path, []))


def _labelled_sleeper(worker: str, task: str, attempt: int) -> subprocess.Popen[bytes]:
    """What a worker killed with SIGKILL leaves behind: a labelled process group of its own."""
    env = dict(os.environ, **{LABEL_WORKER: worker, LABEL_TASK: task, LABEL_ATTEMPT: str(attempt)})
    return subprocess.Popen(
        ["sh", "-c", "sleep 1000 & wait"], env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )


def test_remove_orphans_kills_only_unowned_labelled_groups(tmp_path: Path, executor: LocalExecutor) -> None:
    worker = "w-orphan-" + uuid.uuid4().hex[:8]
    live = _labelled_sleeper(worker, "task-live", 2)
    orphan = _labelled_sleeper(worker, "task-gone", 1)
    other_worker = _labelled_sleeper("w-someone-else", "task-gone", 1)
    own = executor.start(spec_for(tmp_path, ["sleep", "1000"], worker_id=worker, task_id="task-new"))
    try:
        time.sleep(0.3)  # let the shells start their sleeps
        orphan_members = live_members(orphan.pid)
        assert len(orphan_members) == 2

        removed = executor.remove_orphans(worker, {("task-live", 2)})

        assert sorted(int(p) for p in removed) == sorted(orphan_members)
        assert orphan.wait(5) == -signal.SIGKILL
        # SIGKILL is delivered at once but a process takes a moment to be torn down.
        deadline = time.monotonic() + 5
        while live_members(orphan.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_members(orphan.pid) == []
        assert live.poll() is None and len(live_members(live.pid)) == 2
        assert other_worker.poll() is None
        assert own.wait(0) is None  # started by this executor: not an orphan
    finally:
        for p in (live, orphan, other_worker):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
