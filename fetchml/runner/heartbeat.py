"""Heartbeats, the commands they bring back (cancel, drain, offline) and the lease watch that
stops running tasks once no heartbeat has got through for the heartbeat timeout."""

from __future__ import annotations

import logging
import threading
import time

from fetchml.core.enums import WorkerStatus
from fetchml.core.errors import FetchmlError
from fetchml.core.protocol import ActiveAttempt
from fetchml.runner.registration import RegistrationMixin
from fetchml.runner.stopping import StopMixin

log = logging.getLogger("fetchml.runner")


class HeartbeatMixin(RegistrationMixin, StopMixin):
    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            # A stop request wakes it: the server hears at once that this worker takes no work.
            self._hb_wake.wait(self.heartbeat_interval)
            self._hb_wake.clear()
            if self.stop_event.is_set():
                return
            self.heartbeat_once()

    def _lease_watch(self) -> None:
        """No successful heartbeat for longer than the heartbeat timeout: the server has
        requeued (or is about to requeue) what this worker runs, so it is stopped here."""
        while not self.stop_event.wait(0.25):
            silent = time.monotonic() - self._last_contact
            if self._lease_lost or silent <= self.heartbeat_timeout:
                continue
            with self._lock:
                attempts = list(self._attempts.values())
            self._lease_lost = True
            if not attempts:
                continue
            log.warning(
                "no contact with the server for %.0fs (heartbeat timeout %gs): stopping %d running "
                "task(s); the server requeues them",
                silent,
                self.heartbeat_timeout,
                len(attempts),
            )
            for a in attempts:
                threading.Thread(
                    target=a.interrupt,
                    args=("the worker lost contact with the server", self.cfg.stop_grace),
                    daemon=True,
                ).start()

    def heartbeat_once(self) -> None:
        with self._lock:
            attempts = dict(self._attempts)
        active = [ActiveAttempt(task_id=t, attempt=a) for t, a in attempts]
        # Bounded, so a hung request never hides a lost lease for long.
        timeout = max(2.0, min(self.heartbeat_timeout / 2, 15.0))
        try:
            resp = self.client.workers.heartbeat(
                self.worker_id, active, stopping=self.stopping.is_set(), timeout=timeout
            )
        except FetchmlError as exc:
            log.warning("heartbeat failed: %s", exc.message)
            return
        self._last_contact = time.monotonic()
        if self._lease_lost:
            log.info("contact with the server is back")
            self._lease_lost = False
        for cmd in resp.commands:
            target = attempts.get((cmd.task_id, cmd.attempt))
            if cmd.type == "cancel" and target is not None and not target.cancelled.is_set():
                log.info("cancelling task %s attempt %d", cmd.task_id, cmd.attempt)
                threading.Thread(target=target.cancel, args=(self.cfg.stop_grace,), daemon=True).start()
        if resp.drain and not self._draining:
            log.info("draining: finishing %d running task(s), taking no new ones", len(attempts))
            self._draining = True
        if resp.status is WorkerStatus.OFFLINE:
            if self.stopping.is_set():
                return  # stopping and holding nothing: offline is what it asked for
            if self._draining:
                log.info("drained; worker is offline")
                self.stop()
                return
            # The server gave up on us (a long pause): what we run was handed to others.
            log.warning("server marked this worker offline; stopping its tasks and registering again")
            for a in attempts.values():
                a.interrupt("the server marked the worker offline", self.cfg.stop_grace)
            try:
                self.register()
            except FetchmlError as exc:
                log.warning("re-registration failed: %s", exc.message)
