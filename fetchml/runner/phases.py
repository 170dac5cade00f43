"""Where an attempt's time goes on the worker, phase by phase, for `fetchml worker --phase-log`.

The phases follow each other without overlap, from the claim that delivered the attempt to the
moment its slot is free again, so they add up to the attempt's whole time on the worker:

- `claim`: the claim request that delivered it (sent to answered); 0 for a task that came
  back with the last report of the attempt before it on the same slot (that request is the
  earlier attempt's `report_end`);
- `start`: the claim's answer to the attempt's thread running;
- `prepare`: snapshot, datasets and workspace;
- `spawn`: the executor starting the process;
- `report_running`: the wait for an early end within the running-report window, then the
  `running` report unless the process had ended by then (its end reports its start);
- `run`: from then until the process ended and its output was read;
- `logs`: the last log lines shipped;
- `collect`: looking for outputs and uploading them;
- `report_end`: the last report (completed or failed), with the claim for the next task when
  the server takes one (docs/worker-protocol.md).

One JSON object per attempt is appended to the file (created with mode 0600), a line each,
written whole (`O_APPEND`), so the file may be read while the worker runs: `task_id`, `attempt`,
the last `status` the server took, then the phases it went through, in milliseconds. An attempt
that ended early (a failed download, a cancel) has the phases up to there.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("fetchml.runner")

PHASES = (
    "claim",
    "start",
    "prepare",
    "spawn",
    "report_running",
    "run",
    "logs",
    "collect",
    "report_end",
)


class PhaseClock:
    """The phases of one attempt: `lap(name)` ends the phase `name` now, the next starts."""

    def __init__(self, claim_sent: float, claim_answered: float) -> None:
        self.ms: dict[str, float] = {"claim": (claim_answered - claim_sent) * 1000}
        self._mark = claim_answered

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = self.ms.get(name, 0.0) + (now - self._mark) * 1000
        self._mark = now


class PhaseLog:
    """Appends each attempt's phases to a file, or does nothing without one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._failed = False  # warned once

    def write(self, task_id: str, attempt: int, status: str, clock: PhaseClock) -> None:
        if self.path is None:
            return
        line = {
            "task_id": task_id,
            "attempt": attempt,
            "status": status,
            **{name: round(clock.ms[name], 3) for name in PHASES if name in clock.ms},
        }
        data = (json.dumps(line) + "\n").encode()
        with self._lock:
            try:
                # O_NOFOLLOW: in a folder a task's user can write (/tmp), a link planted at the
                # path must not turn a root worker's appends onto another file.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:  # a full disk or a removed folder must not touch the tasks
                if not self._failed:
                    log.warning("cannot write the phase log %s: %s", self.path, exc)
                self._failed = True
