"""The embedded local worker that `fetchml serve` (and `fetchml run` without a server) starts.

It is an ordinary runner.Worker talking HTTP to its own server on loopback, with a key that
exists only in the server process's memory."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("fetchml.embedded")


def start_embedded_worker(
    services: Any,
    url: str,
    *,
    executor: str = "local",
    slots: int | None = None,
    name: str | None = None,
    wait_registered: float | None = None,
) -> Callable[[], None]:
    """Start the worker in a thread. With `wait_registered`, return only once it has registered
    (raising RuntimeError if it could not), for callers whose server is already serving."""
    from fetchml.client import FetchmlClient
    from fetchml.core.enums import Role
    from fetchml.core.errors import FetchmlError
    from fetchml.runner.worker import Worker, WorkerConfig

    worker_name = name or f"embedded-{socket.gethostname().split('.')[0]}"
    key = services.keys.add_process_key("embedded-worker", Role.WORKER, key_id=f"proc_{worker_name}"[:32])
    data_dir: Path = services.settings.data_dir
    cfg = WorkerConfig(name=worker_name, work_dir=data_dir / "worker", executor=executor, batch_slots=slots)
    client = FetchmlClient(url, key)
    worker = Worker(cfg, client)

    def run() -> None:
        deadline = time.monotonic() + 60
        while not worker.stop_event.is_set():
            try:
                client.health()
                break
            except FetchmlError:
                if time.monotonic() > deadline:
                    log.error("embedded worker: server at %s never answered", url)
                    return
                time.sleep(0.05)
        try:
            worker.run()
        except Exception:
            log.exception("embedded worker stopped")

    thread = threading.Thread(target=run, name="fetchml-embedded-worker", daemon=True)
    thread.start()
    if wait_registered is not None and (
        not worker.registered.wait(wait_registered) or worker.registration_error
    ):
        worker.stop()
        client.close()
        raise RuntimeError(
            f"the embedded worker could not register: {worker.registration_error or 'timed out'}"
        )

    def stop() -> None:
        worker.stop()
        # Closing the client ends the claim long-poll in flight, so stopping takes no time.
        client.close()
        thread.join(timeout=cfg.stop_grace + 30)

    return stop
