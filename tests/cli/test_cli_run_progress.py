"""`fetchml run`'s progress on stderr, as a real process against a real server and worker: drawn
(snapshot packing and upload, the queued line with the server's pending reason, then `running`)
when stderr is a terminal (a pseudo-terminal here), and none of it when stderr is a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import SQLITE
from tests.cli.conftest import cli_env
from tests.e2e.conftest import Cluster, local_cluster
from tests.harness import ServerPool, die_with_parent

# Waits for a gate file (at most 60 s), so the test decides when the task ends.
TRAIN = """\
import sys, time
from pathlib import Path
print("started", flush=True)
gate = Path(sys.argv[1])
for _ in range(1200):
    if gate.exists():
        break
    time.sleep(0.05)
print("done", flush=True)
"""
TASK_QUEUED = re.compile(r"task ([0-9a-f]{32}) queued")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server (SQLite: the database is not the point) and one local worker without GPUs."""
    pool = ServerPool(SQLITE)
    try:
        with local_cluster(pool, tmp_path_factory.mktemp("run-progress")) as c:
            yield c
    finally:
        pool.close()


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "train.py").write_text(TRAIN)
    # Content of its own (and a few MB), so this run uploads its snapshot and the bar has bytes to count.
    (proj / "weights.bin").write_bytes(uuid.uuid4().bytes + os.urandom(3 * 1024 * 1024))
    return proj


def _env(cluster: Cluster) -> dict[str, str]:
    env = cli_env(cluster.server, cluster.user, TERM="xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)
    return env


@dataclass
class PtyRun:
    returncode: int
    stdout: str
    tty: str  # everything written to the terminal, escape sequences and all

    @property
    def tty_text(self) -> str:
        """What the terminal showed over time, without the escape sequences."""
        return ESCAPE.sub("", self.tty)


def run_with_stderr_on_a_pty(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    on_output: Callable[[str, int], None],
    timeout: float = 90,
) -> PtyRun:
    """`fetchml ARGS` with stderr on a pseudo-terminal (200 columns) and stdout to a pipe;
    `on_output(tty so far, pid)` is called as the terminal gets output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fetchml", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=cwd,
        preexec_fn=die_with_parent,
    )
    os.close(slave)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the process (the last holder of the terminal) is gone
                    break
                if not data:
                    break
                got += data
                on_output(got.decode(errors="replace"), proc.pid)
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"fetchml {' '.join(args)} still running after {timeout}s:\n{got!r}")
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        return PtyRun(proc.wait(10), stdout, got.decode(errors="replace"))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_on_a_terminal_run_shows_the_snapshot_upload_and_its_phases(cluster: Cluster, tmp_path: Path) -> None:
    proj = _project(tmp_path)
    gate = tmp_path / "gate"

    def open_gate_once_running(tty: str, pid: int) -> None:
        # The task ends only after the terminal said it runs: that line is never raced by the end.
        if "running on worker w1" in tty:
            gate.touch()

    run = run_with_stderr_on_a_pty(
        ["run", "--no-embedded", "--no-download", "train.py", str(gate)],
        _env(cluster),
        proj,
        open_gate_once_running,
    )
    shown = run.tty_text
    assert run.returncode == 0, run.tty
    # The task's output on stdout, untouched by what is drawn on stderr.
    assert run.stdout == "started\ndone\n", run.stdout
    assert "snapshot: packing, 2 files" in shown, shown
    # The upload bar, last drawn with all of its bytes sent.
    assert re.search(r"snapshot: uploading.*? (\d+\.\d)/\1 MiB", shown), shown
    tid = TASK_QUEUED.search(shown)
    assert tid, shown
    assert re.search(rf"task {tid[1][:12]} queued \d+:\d\d", shown), shown
    assert f"fetchml: task {tid[1]} running on worker w1 (waited " in shown, shown
    assert f"fetchml: task {tid[1]} completed" in shown, shown
    # Drawn lines are redrawn in place (carriage returns, erase-line), not piled up.
    assert "\r\x1b[2K" in run.tty


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_on_a_terminal_the_queued_line_shows_the_pending_reason(cluster: Cluster, tmp_path: Path) -> None:
    proj = _project(tmp_path)
    reason: list[str] = []
    interrupted: list[int] = []

    def interrupt_once_the_reason_shows(tty: str, pid: int) -> None:
        found = TASK_QUEUED.search(tty)
        if found is None or interrupted:
            return
        if not reason:
            pending = cluster.task(found[1]).get("pending_reason")
            if not pending:
                return
            reason.append(pending)
        if reason[0] in ESCAPE.sub("", tty):
            os.kill(pid, signal.SIGINT)  # as Ctrl-C would
            interrupted.append(pid)

    # The worker has no GPU: the task waits, and the server says why.
    run = run_with_stderr_on_a_pty(
        ["run", "--no-embedded", "--no-download", "--gpu", "1", "train.py", "never"],
        _env(cluster),
        proj,
        interrupt_once_the_reason_shows,
    )
    assert interrupted, run.tty
    assert run.returncode == 130, run.tty
    shown = run.tty_text
    tid = TASK_QUEUED.search(shown)
    assert tid is not None
    assert re.search(rf"task {tid[1][:12]} queued \d+:\d\d: {re.escape(reason[0])}", shown), shown
    assert "GPU" in reason[0], reason
    assert f"interrupted: cancelling task {tid[1]}" in shown, shown
    assert "running on worker" not in shown
    assert cluster.wait_status(tid[1], "failed")["error"] == "cancelled"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_with_stderr_to_a_pipe_run_draws_nothing(cluster: Cluster, tmp_path: Path) -> None:
    proj = _project(tmp_path)
    gate = tmp_path / "gate"
    gate.touch()
    result = subprocess.run(
        [sys.executable, "-m", "fetchml", "run", "--no-embedded", "--no-download", "train.py", str(gate)],
        env=_env(cluster),  # TERM says a capable terminal: the pipe is what counts
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "started\ndone\n"
    assert "uploading snapshot" in result.stderr, result.stderr  # an upload there was, undrawn
    # Only the plain `fetchml: ...` lines, once each: no bars, no status line, no redrawing.
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("fetchml: ") for line in lines), result.stderr
    assert len(lines) == len(set(lines)), result.stderr
    for drawn in ("\r", "\x1b", "snapshot: packing", "snapshot: uploading", "running on worker", "MiB"):
        assert drawn not in result.stderr, (drawn, result.stderr)
