"""Orphans: the containers a worker's earlier run left behind, found by their labels and removed
when a worker (re)registers."""

from __future__ import annotations

import logging
from typing import Any

from fetchml.runner.executors.docker_spec import LABEL_ATTEMPT, LABEL_SERVER, LABEL_TASK, LABEL_WORKER

# The docker executor's logger, as before its parts had modules of their own.
log = logging.getLogger("fetchml.runner.executors.docker")


class OrphanMixin:
    client: Any

    def remove_orphans(
        self, worker_id: str, live: set[tuple[str, int]], server_id: str | None = None
    ) -> list[str]:
        """Remove (force) every container labelled fetchml.worker=<worker_id> and
        fetchml.server=<server_id>, running or not, whose (fetchml.task, fetchml.attempt) is not
        in `live`. Returns their ids."""
        import docker.errors

        removed: list[str] = []
        containers = self.client.containers.list(all=True, filters={"label": f"{LABEL_WORKER}={worker_id}"})
        for c in containers:
            labels = c.labels or {}
            if labels.get(LABEL_SERVER, "") != (server_id or ""):
                continue  # another server's worker of the same name
            try:
                attempt = int(labels.get(LABEL_ATTEMPT, ""))
            except ValueError:
                attempt = -1
            if (labels.get(LABEL_TASK, ""), attempt) in live:
                continue
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                continue
            log.warning("removed orphaned container %s (%s)", c.name, c.short_id)
            removed.append(c.id)
        return removed
