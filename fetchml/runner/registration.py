"""Registration: retried with backoff until the server answers; each one removes the
executions an earlier run of this worker left behind (orphans)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fetchml.client.base import ServerUnreachableError
from fetchml.core.errors import ForbiddenError, UnauthorizedError
from fetchml.core.protocol import RegisterWorkerRequest, WorkerCapabilities
from fetchml.runner.capabilities import detect_capabilities
from fetchml.runner.retry import TRANSIENT
from fetchml.runner.worker_state import WorkerState

log = logging.getLogger("fetchml.runner")

REGISTER_BACKOFF_START = 0.5
REGISTER_BACKOFF_MAX = 30.0


class RegistrationMixin(WorkerState):
    def register(self) -> None:
        caps: dict[str, Any] = detect_capabilities(self.gpu_provider, self.executor.name)
        slots = self.cfg.batch_slots or max(1, int(caps["gpu_count"]))
        resp = self.client.workers.register(
            RegisterWorkerRequest(
                name=self.cfg.name,
                capabilities=WorkerCapabilities.model_validate(caps),
                batch_slots=slots,
                service_slots=self.services.slots,
            )
        )
        self.worker_id = resp.worker_id
        self.server_id = resp.server_id
        self.heartbeat_interval = resp.heartbeat_interval
        self.heartbeat_timeout = resp.heartbeat_timeout
        self.claim_wait = resp.claim_wait
        self.claim_takes_report = resp.claim_takes_report
        self.report_takes_started = resp.report_takes_started
        self._last_contact = time.monotonic()
        self._lease_lost = False
        self.slots = slots
        set_slots = getattr(self.executor, "set_slots", None)
        if set_slots is not None:  # docker: default limits are a share of the host per slot
            set_slots(slots)
        with self._lock:
            live = set(self._attempts)
        # Services of an earlier registration are stopped by their own threads, not here.
        live |= self.services.live_keys()
        self.services.on_register()
        # Only what this worker name started for this server: another server's worker of the
        # same name on this host keeps its tasks.
        removed = self.executor.remove_orphans(self.worker_id, live, self.server_id)
        if removed:
            log.warning(
                "removed %d orphaned execution(s) of an earlier run: %s", len(removed), ", ".join(removed)
            )
        log.info(
            "worker %s registered: %s executor, %d slot(s), %d GPU(s)",
            self.worker_id,
            self.executor.name,
            slots,
            caps["gpu_count"],
        )

    def register_until_up(self) -> bool:
        """Register, retrying with backoff while the server cannot be reached or is unavailable.
        False when the worker was stopped first. Raises at once for a refused key (401/403) or
        any other definite answer, and once `connect_timeout` has passed."""
        delay = REGISTER_BACKOFF_START
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                self.register()
                return True
            except (UnauthorizedError, ForbiddenError):
                raise
            except TRANSIENT as exc:
                waited = time.monotonic() - started
                limit = self.cfg.connect_timeout
                if limit is not None and waited + delay > limit:
                    raise ServerUnreachableError(
                        f"gave up registering after {waited:.0f}s (--connect-timeout {limit:g}): {exc.message}"
                    ) from exc
                log.warning(
                    "cannot register with the server (attempt %d): %s; retrying in %.1fs",
                    tries,
                    exc.message,
                    delay,
                )
            if self.stop_event.wait(delay) or self.stopping.is_set():
                log.info("stopped before the server could be reached")
                return False
            delay = min(delay * 2, REGISTER_BACKOFF_MAX)
