"""The embedded local worker that `fetchml serve` (and `fetchml run` without a server) starts.

It is an ordinary runner.Worker talking HTTP to its own server on loopback, with a key that
exists only in the server process's memory."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("fetchml.embedded")


def local_user_name() -> str:
    """The OS user's name as a fetchml user id (letters, digits, _ and -; at most 64): the
    owner of an embedded `fetchml run`'s tasks and of the first-run admin key of `fetchml serve`,
    so that key's holder is the owner of the history it finds."""
    import getpass
    import re

    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # a uid with no passwd entry and no LOGNAME/USER (containers)
        name = ""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:64] or "local"


def embedded_dataset_roots(host: str) -> tuple[Path, ...]:
    """Where the embedded worker's tasks may name local dataset files: FETCHML_DATASET_ROOTS
    when set (empty: nowhere); otherwise, for a server on loopback (one user, on their own
    machine), that user's home folder; for a server listening beyond loopback, nowhere."""
    env = os.environ.get("FETCHML_DATASET_ROOTS")
    if env is not None:
        return tuple(Path(p) for p in env.split(os.pathsep) if p)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return (Path.home(),) if loopback else ()


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only. A name other than
    localhost counts as not loopback: it may resolve to anything."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_embedded_isolation(host: str, executor: str, run_as: str | None) -> str | None:
    """Why `fetchml serve` must not start its embedded worker as configured, or None.

    Beyond loopback, users other than the server's own submit tasks: those must not run in the
    server's process tree as the server's user (they could read its database, its memory and
    its keys). Docker or another user (--worker-run-as) isolates them; on loopback the default
    (local executor, same user) is for the one user of the machine."""
    if is_loopback(host) or run_as is not None:
        return None
    if executor == "docker":
        return None
    if executor == "auto":
        from fetchml.runner.executors.docker import docker_available

        if docker_available():
            return None
    return (
        f"refusing to serve on {host} with an embedded worker that runs users' tasks as the "
        f"server's own user (--worker-executor {executor}): any user could read the server's "
        "database and keys. Use --worker-executor docker, --worker-run-as USER (server run as "
        "root), or --no-worker and separate `fetchml worker` machines"
    )


def check_worker_run_as(executor: str, run_as: str | None) -> str | None:
    """Why --worker-run-as cannot be used as given (checked before the server starts), or None."""
    if run_as is None:
        return None
    if executor != "local":
        return "--worker-run-as applies to the local executor only (--worker-executor local)"
    from fetchml.runner.executors.base import ExecutorError
    from fetchml.runner.executors.local import task_user

    try:
        task_user(run_as)
    except ExecutorError as exc:
        return str(exc)
    return None


def start_embedded_worker(
    services: Any,
    url: str,
    *,
    executor: str = "local",
    slots: int | None = None,
    name: str | None = None,
    wait_registered: float | None = None,
    dataset_roots: Sequence[Path] | None = None,
    allow_private_datasets: bool | None = None,
    max_dataset_bytes: int | None = None,
    run_as: str | None = None,
) -> Callable[[], None]:
    """Start the worker in a thread. With `wait_registered`, return only once it has registered
    (raising RuntimeError if it could not), for callers whose server is already serving.

    Dataset settings left None come from the environment (FETCHML_DATASET_ROOTS, ...), else
    from `embedded_dataset_roots`'s single-user default."""
    from fetchml.client import FetchmlClient
    from fetchml.core.enums import Role
    from fetchml.core.errors import FetchmlError
    from fetchml.runner.datasets import DEFAULT_MAX_DATASET_BYTES
    from fetchml.runner.worker import Worker, WorkerConfig

    worker_name = name or f"embedded-{socket.gethostname().split('.')[0]}"
    key = services.keys.add_process_key(
        "embedded-worker", Role.WORKER, key_id=f"proc_{worker_name}"[:32], worker_name=worker_name
    )
    data_dir: Path = services.settings.data_dir
    cfg = WorkerConfig(
        name=worker_name,
        work_dir=data_dir / "worker",
        executor=executor,
        batch_slots=slots,
        run_as=run_as,
        dataset_roots=tuple(
            dataset_roots if dataset_roots is not None else embedded_dataset_roots(services.settings.host)
        ),
        allow_private_datasets=(
            allow_private_datasets
            if allow_private_datasets is not None
            else os.environ.get("FETCHML_ALLOW_PRIVATE_DATASETS", "").lower() in ("1", "true", "yes", "on")
        ),
        max_dataset_bytes=(
            max_dataset_bytes or int(os.environ.get("FETCHML_MAX_DATASET_BYTES") or DEFAULT_MAX_DATASET_BYTES)
        ),
    )
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
