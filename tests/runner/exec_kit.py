"""What the executor tests share (Docker, local process, and the Docker security tests): an
ExecSpec in a fresh workspace, and the end of an execution with a bound on the wait."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from fetchml.runner.executors.base import ExecSpec, Execution, ExitStatus


def spec_for(tmp_path: Path, command: list[str], worker_id: str, **kw: Any) -> ExecSpec:
    """A spec for `command` with tmp_path/ws as its workspace (snapshot/ made); `kw` adds or
    replaces fields (image, env, limits, ...)."""
    workspace = tmp_path / "ws"
    workdir = workspace / "snapshot"
    workdir.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "task_id": uuid.uuid4().hex,
        "attempt": 1,
        "worker_id": worker_id,
        "command": command,
        "workspace": workspace,
        "workdir": workdir,
    }
    fields.update(kw)
    return ExecSpec(**fields)


def finish(execution: Execution, timeout: float = 30) -> tuple[list[str], ExitStatus]:
    """Every line and the exit status; fails (instead of hanging) if the output does not end."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(execution.lines()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"the output did not end within {timeout} s: {lines[-5:]}"
    status = execution.wait(timeout)
    assert status is not None, "the process did not finish"
    return lines, status


def docker_spec_for(tmp_path: Path, command: list[str], worker_id: str, **kw: Any) -> ExecSpec:
    """`spec_for` in the locally built test image unless `image` is given (None: the executor's
    default)."""
    from tests.dockerutil import TEST_IMAGE

    return spec_for(tmp_path, command, worker_id, **{"image": TEST_IMAGE, **kw})
