"""The docker executor: an attempt is a container.

The attempt's workspace is bind-mounted read-write at /workspace; host paths under it, in the
command and in the environment, are rewritten to their /workspace equivalent. Containers carry the
labels fetchml.task / fetchml.worker / fetchml.attempt / fetchml.server (the id of the server the
worker registered with), by which a restarted worker finds and removes the ones it no longer owns
(`remove_orphans`): only containers of the same worker name AND the same server, so workers of two
servers that share a name on one host never remove each other's containers.

GPUs: the assigned host indices go to Docker as device_ids (never "all"). Inside the container the
NVIDIA runtime shows only those devices, numbered from 0, so CUDA_VISIBLE_DEVICES there is
"0,...,n-1", not the host indices (host "2,3" would hide every GPU from CUDA).

Hardening (every container): all capabilities dropped but TASK_CAPABILITIES, no-new-privileges,
a pids limit, a private IPC namespace, never privileged, no Docker socket (only the workspace and
the read-only dataset files are mounted), the worker's network mode, and default memory/CPU
limits when the task asks for none. The root filesystem stays writable: tasks write to /tmp.

The parts, one module each: what a container gets (docker_spec), images (docker_images), a
started container (docker_execution), orphans (docker_orphans) and the daemon itself
(docker_daemon). This module holds `DockerExecutor`, which creates and starts the containers.

The docker SDK is imported only by these modules, and only when it is used: importing
fetchml.runner or fetchml.cli never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

from fetchml.runner.executors.base import ExecSpec, ExecutorError, stop_in_parallel
from fetchml.runner.executors.docker_daemon import _explain, docker_available
from fetchml.runner.executors.docker_execution import DAEMON_RETURN_WAIT, RUNTIME_LOST, DockerExecution
from fetchml.runner.executors.docker_images import ImageMixin
from fetchml.runner.executors.docker_orphans import OrphanMixin
from fetchml.runner.executors.docker_spec import (
    CONTAINER_WORKSPACE,
    DEFAULT_PIDS_LIMIT,
    LABEL_ATTEMPT,
    LABEL_SERVER,
    LABEL_TASK,
    LABEL_WORKER,
    TASK_CAPABILITIES,
    ContainerSpecMixin,
    PathMapper,
    container_name,
    format_gb,
    host_share,
    memory_limit,
    readonly_target,
)
from fetchml.runner.watchdog import Watchdog

__all__ = [
    "CONTAINER_WORKSPACE",
    "DAEMON_RETURN_WAIT",
    "DEFAULT_PIDS_LIMIT",
    "LABEL_ATTEMPT",
    "LABEL_SERVER",
    "LABEL_TASK",
    "LABEL_WORKER",
    "RUNTIME_LOST",
    "TASK_CAPABILITIES",
    "DockerExecution",
    "DockerExecutor",
    "PathMapper",
    "container_name",
    "docker_available",
    "format_gb",
    "host_share",
    "memory_limit",
    "readonly_target",
]

log = logging.getLogger(__name__)


class DockerExecutor(ContainerSpecMixin, ImageMixin, OrphanMixin):
    """Runs attempts in containers through the Docker daemon.

    `client`: a docker.DockerClient (default: docker.from_env()). `default_image`: for tasks that
    name none. `stop_grace`: seconds between SIGTERM and SIGKILL on shutdown(). `init`: run
    Docker's init (tini) as PID 1, so SIGTERM reaches the task (a process that is PID 1 ignores it
    unless it installs a handler) and zombies are reaped. `user`: "uid:gid" to run as (default:
    the image's user, usually root, whose files in the workspace a non-root worker cannot delete).

    Limits: `pids_limit` (0: none); `default_memory_gb` / `default_cpus` for tasks that ask for
    none (None: an equal share of this host per slot, see host_share and set_slots; 0: no limit);
    a task's own cpu / memory_gb always applies. `network`: bridge, none, host or the name of a
    Docker network. `cap_add`: the capabilities kept (all others are dropped).
    """

    name = "docker"

    def __init__(
        self,
        client: Any = None,
        default_image: str | None = None,
        stop_grace: float = 10,
        *,
        init: bool = True,
        user: str | None = None,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        default_memory_gb: float | None = None,
        default_cpus: float | None = None,
        network: str = "bridge",
        cap_add: tuple[str, ...] = TASK_CAPABILITIES,
    ) -> None:
        if pids_limit < 0:
            raise ExecutorError("the pids limit must be 0 (none) or positive")
        if (default_memory_gb is not None and default_memory_gb < 0) or (
            default_cpus is not None and default_cpus < 0
        ):
            raise ExecutorError("default memory and CPU limits must be 0 (none) or positive")
        if not network or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", network):
            raise ExecutorError(
                f"invalid Docker network {network!r}: use bridge, none, host or a network name"
            )
        if client is None:
            import docker

            try:
                client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise ExecutorError(f"cannot reach the Docker daemon: {exc}") from exc
        self.client = client
        self.default_image = default_image
        self.stop_grace = stop_grace
        self.init = init
        self.user = user
        self.pids_limit = pids_limit
        self.network = network
        self.cap_add = tuple(cap_add)
        self._memory_gb_setting = default_memory_gb
        self._cpus_setting = default_cpus
        self.default_memory_gb: float | None = None
        self.default_cpus: float | None = None
        self.set_slots(1)
        self._lock = threading.Lock()
        self._executions: list[DockerExecution] = []
        # Removes this worker's containers if the worker dies without stopping them.
        self._watchdog = Watchdog()

    def start(self, spec: ExecSpec) -> DockerExecution:
        import docker.errors

        if not spec.command:
            raise ExecutorError("cannot start the task: its command is empty")
        image = spec.image or self.default_image
        if not image:
            raise ExecutorError("no Docker image: the task names none and this worker has no default image")
        self.ensure_image(image)
        config = self.container_config(spec, image)
        try:
            container = self._create(config, spec)
        except docker.errors.ImageNotFound as exc:
            raise ExecutorError(f"image {image!r} not found: {_explain(exc)}") from exc
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot create a container from {image!r}: {_explain(exc)}") from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise ExecutorError(f"cannot start a container from {image!r}: {_explain(exc)}") from exc
        self._watchdog.watch_container(container.id)
        execution = DockerExecution(spec, container, self.limits(spec)[0], self._watchdog)
        with self._lock:
            self._executions = [e for e in self._executions if e.running]
            self._executions.append(execution)
        log.info(
            "started container %s (%s) for task %s attempt %d",
            container.name,
            image,
            spec.task_id,
            spec.attempt,
        )
        return execution

    def _create(self, config: dict[str, Any], spec: ExecSpec) -> Any:
        """containers.create; a leftover container of the same name from this worker (same task
        and attempt, e.g. after a crash between create and start) is replaced."""
        import docker.errors

        try:
            return self.client.containers.create(**config)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            try:
                old = self.client.containers.get(config["name"])
            except docker.errors.NotFound:
                return self.client.containers.create(**config)
            labels = old.labels or {}
            if (
                labels.get(LABEL_WORKER),
                labels.get(LABEL_TASK),
                labels.get(LABEL_ATTEMPT),
                labels.get(LABEL_SERVER, ""),
            ) != (spec.worker_id, spec.task_id, str(spec.attempt), spec.server_id or ""):
                raise
            log.warning("replacing leftover container %s", old.name)
            old.remove(force=True)
            return self.client.containers.create(**config)

    # -- worker-level ----------------------------------------------------------------------------
    def shutdown(self, grace: float | None = None) -> None:
        """Stop every container this executor started that is still running, in parallel."""
        grace = self.stop_grace if grace is None else grace
        with self._lock:
            started, self._executions = list(self._executions), []
        stop_in_parallel(started, grace)
        self._watchdog.close_if_idle()
