"""Orphans: the process groups a worker's earlier run left behind (a watchdog killed along with
the worker), found by the labels in their environment and killed when a worker (re)registers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal

import psutil

from fetchml.runner.executors.local_execution import LocalExecution
from fetchml.runner.executors.local_groups import _pgid, _signal_group
from fetchml.runner.executors.local_sandbox import LABEL_ATTEMPT, LABEL_SERVER, LABEL_TASK, LABEL_WORKER

# The local executor's logger, as before its parts had modules of their own.
log = logging.getLogger("fetchml.runner.executors.local")


class LocalOrphanMixin:
    """The orphan half of LocalExecutor (fetchml.runner.executors.local)."""

    _executions: list[LocalExecution]

    def remove_orphans(
        self, worker_id: str, live: set[tuple[str, int]], server_id: str | None = None
    ) -> list[str]:
        """Kill the process groups labelled for `worker_id` and `server_id` (FETCHML_LABEL_* in
        their environment; None matches only processes without a server label) whose
        (task, attempt) is not in `live`. Returns the pids that were signalled, as strings.

        Processes this executor started itself are never touched (they are this run's, not
        leftovers). Processes whose environment cannot be read (another user's) are skipped.
        """
        mine = {e.pgid for e in self._executions} | {os.getpgrp()}
        own_pid = os.getpid()
        orphans: dict[int, list[psutil.Process]] = {}
        for proc in psutil.process_iter(["status"]):
            if proc.pid == own_pid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(LABEL_WORKER) != worker_id or env.get(LABEL_SERVER, "") != (server_id or ""):
                continue  # another worker's, or a worker of the same name serving another server
            try:
                attempt = int(env.get(LABEL_ATTEMPT, ""))
            except ValueError:
                attempt = -1
            if (env.get(LABEL_TASK, ""), attempt) in live:
                continue
            pgid = _pgid(proc)
            if pgid is None or pgid in mine:
                continue
            orphans.setdefault(pgid, []).append(proc)
        removed: list[str] = []
        for pgid, procs in orphans.items():
            _signal_group(pgid, signal.SIGKILL)
            for p in procs:  # members that left the group
                with contextlib.suppress(psutil.Error):
                    p.kill()
                removed.append(str(p.pid))
            log.warning("killed orphaned process group %d (%d processes)", pgid, len(procs))
        return removed
