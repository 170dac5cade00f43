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

The docker SDK is imported only by this module, and only when it is used: importing fetchml.runner
or fetchml.cli never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import posixpath
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fetchml.runner.executors.base import ExecSpec, ExecutorError, ExitStatus, stop_in_parallel
from fetchml.runner.lines import LineSplitter
from fetchml.runner.watchdog import Watchdog

__all__ = [
    "CONTAINER_WORKSPACE",
    "DEFAULT_PIDS_LIMIT",
    "LABEL_ATTEMPT",
    "LABEL_SERVER",
    "LABEL_TASK",
    "LABEL_WORKER",
    "TASK_CAPABILITIES",
    "DockerExecution",
    "DockerExecutor",
    "docker_available",
    "host_share",
]

log = logging.getLogger(__name__)

CONTAINER_WORKSPACE = "/workspace"
LABEL_TASK = "fetchml.task"
LABEL_WORKER = "fetchml.worker"
LABEL_ATTEMPT = "fetchml.attempt"
LABEL_SERVER = "fetchml.server"

# What root inside a task's container keeps of Docker's default capability set, and why:
# CHOWN, DAC_OVERRIDE, FOWNER: manage files it does not own, above all the bind-mounted workspace,
#   which belongs to the worker's user (without DAC_OVERRIDE root in the container cannot even
#   write $FETCHML_OUTPUT_DIR), and package managers that chown what they unpack;
# SETUID, SETGID: images that drop to an unprivileged user (su, gosu, apt's _apt sandbox).
# Dropped among others: NET_RAW (no packet forging or ARP spoofing on the bridge), MKNOD (no device
# nodes), SYS_CHROOT, SETPCAP, SETFCAP, FSETID, KILL, NET_BIND_SERVICE, AUDIT_WRITE.
TASK_CAPABILITIES: tuple[str, ...] = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
DEFAULT_PIDS_LIMIT = 4096  # far above any training job's processes and threads; stops fork bombs

_POLL = 0.1
_CATCH_UP = 100  # log entries read again when a follow stream ends
# How long an attempt waits for a restarting Docker daemon before giving its container up.
DAEMON_RETURN_WAIT = 120.0
RUNTIME_LOST = "the Docker daemon restarted while the task ran"


def _daemon_unreachable(exc: BaseException) -> bool:
    """A broken connection to the daemon (it stopped or restarted), not an answer from it."""
    import requests

    return isinstance(exc, requests.exceptions.RequestException)


def docker_available(timeout: float = 3.0) -> bool:
    """Whether a Docker daemon answers a ping within `timeout` seconds (for ``--executor auto``).
    False on any error, including the docker SDK not being installed."""
    try:
        import docker

        client = docker.from_env(timeout=max(1, math.ceil(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def format_gb(gb: float) -> str:
    """8 -> "8", 0.0625 -> "0.0625"."""
    return f"{gb:g}"


def memory_limit(gb: float) -> str:
    """Docker's memory limit for `gb` GiB: "8g" for whole numbers, bytes otherwise."""
    if float(gb).is_integer():
        return f"{int(gb)}g"
    return str(int(gb * 1024**3))


def host_share(slots: int = 1) -> tuple[float, float]:
    """(memory GiB, CPUs) of one of `slots` equal shares of this host: 90% of its memory (the
    rest stays with the worker, dockerd and the system) and its logical CPUs, divided by slots.
    The default limits of a task that asks for none."""
    import psutil

    slots = max(1, slots)
    memory = psutil.virtual_memory().total * 0.9 / slots / 1024**3
    cpus = (psutil.cpu_count(logical=True) or os.cpu_count() or 1) / slots
    # Whole MiB and hundredths of a CPU keep the figures readable in `docker inspect`.
    return max(math.floor(memory * 1024) / 1024, 1 / 16), max(math.floor(cpus * 100) / 100, 0.01)


def readonly_target(container_workdir: str, rel: str) -> str:
    """The container path of a read-only mount `rel` (relative to the working directory); it must
    stay below the workspace."""
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
        raise ExecutorError(f"read-only mount path {rel!r} must be a plain relative path")
    target = posixpath.normpath(posixpath.join(container_workdir, rel))
    if not target.startswith(CONTAINER_WORKSPACE + "/"):
        raise ExecutorError(f"read-only mount path {rel!r} leaves the workspace")
    return target


class PathMapper:
    """Rewrites host paths under the workspace to the container's /workspace."""

    def __init__(self, workspace: Path) -> None:
        roots = {str(workspace), str(workspace.resolve())}
        roots = {r.rstrip("/") or "/" for r in roots}
        # A root counts only as a whole path component: /ws matches /ws and /ws/x, not /ws2.
        alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w.~-])(?:{alternatives})(?=/|$|[^\w.~-])")

    def __call__(self, value: str) -> str:
        return self._pattern.sub(CONTAINER_WORKSPACE, value)


def _split_entry(frame: bytes) -> tuple[bytes, bytes]:
    """A log entry asked for with timestamps=True: b"<RFC 3339 nano> <payload>"."""
    stamp, sep, payload = frame.partition(b" ")
    return (stamp, payload) if sep else (b"", frame)


class DockerExecution:
    """One attempt running in a container. lines(), wait() and stop() may run in different
    threads. Read lines() and wait() before cleanup(): cleanup removes the container."""

    def __init__(
        self, spec: ExecSpec, container: Any, memory_gb: float | None, watchdog: Watchdog | None = None
    ) -> None:
        self.spec = spec
        self._watchdog = watchdog
        self.container = container
        self.id: str = container.id
        self.name: str = container.name
        self._memory_gb = memory_gb
        self._lock = threading.Lock()
        self._stopped = False
        self._cancelled = False
        self._status: ExitStatus | None = None
        self._removed = False
        # Set when a call to the daemon broke mid-run: a daemon restart stops every container
        # (without live-restore), which says nothing about the task itself.
        self._daemon_lost = False

    def _await_daemon(self) -> bool:
        """Wait (bounded) for the daemon to answer again after a broken connection."""
        self._daemon_lost = True
        deadline = time.monotonic() + DAEMON_RETURN_WAIT
        while time.monotonic() < deadline:
            try:
                self.container.client.ping()
                return True
            except Exception:  # any failure means "not back yet"
                time.sleep(0.5)
        return False

    def lines(self) -> Iterator[str]:
        """Follows the container's log. Docker may end a follow stream when the container stops
        before its last entry is written (seen with a final line without newline), so when the
        stream ends the last entries are read once more and whatever was not seen is added.
        Entries are told apart by their timestamps (nanoseconds)."""
        import docker.errors

        splitter = LineSplitter()  # lines capped as they arrive (runner.lines)
        recent: deque[tuple[bytes, bytes]] = deque(maxlen=_CATCH_UP)
        try:
            stream = self.container.logs(stream=True, follow=True, stdout=True, stderr=True, timestamps=True)
        except docker.errors.NotFound:
            return
        try:
            for frame in stream:
                entry = _split_entry(frame)
                recent.append(entry)
                yield from splitter.feed(entry[1])
        except docker.errors.NotFound:  # removed while streaming
            pass
        except Exception as exc:
            if not _daemon_unreachable(exc):
                raise
            self._daemon_lost = True
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        for _, payload in self._missed(recent):
            yield from splitter.feed(payload)
        yield from splitter.end()

    def _missed(self, recent: deque[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        import docker.errors

        try:
            self.wait(timeout=10)  # the entry is written by the time the container is reported gone
            tail = self.container.client.api.logs(
                self.id, stdout=True, stderr=True, stream=True, follow=False, timestamps=True, tail=_CATCH_UP
            )
            entries = [_split_entry(frame) for frame in tail]
        except docker.errors.DockerException:
            return []
        except Exception as exc:
            if not _daemon_unreachable(exc):
                raise
            self._daemon_lost = True
            return []
        seen = set(recent)
        # Only entries after the last one seen: older ones were shown (or fell out of `recent`).
        last = recent[-1] if recent else None
        if last is not None and last in entries:
            entries = entries[len(entries) - entries[::-1].index(last) :]
        return [e for e in entries if e not in seen]

    def _state(self) -> dict[str, Any]:
        self.container.reload()
        state: dict[str, Any] = self.container.attrs.get("State", {})
        return state

    def wait(self, timeout: float | None = None) -> ExitStatus | None:

        if self._status is not None:
            return self._status
        for _ in range(3):  # a daemon that restarts again and again is given up on
            try:
                return self._wait(timeout)
            except Exception as exc:
                if not _daemon_unreachable(exc):
                    raise
                log.warning("task %s: lost the Docker daemon; waiting for it to return", self.spec.task_id)
                if not self._await_daemon():
                    break
        status = ExitStatus(exit_code=None, error=RUNTIME_LOST, runtime_lost=True)
        self._status = status
        return status

    def _wait(self, timeout: float | None) -> ExitStatus | None:
        import docker.errors

        try:
            if timeout is not None:
                deadline = time.monotonic() + timeout
                while self._state().get("Status") not in ("exited", "dead"):
                    if time.monotonic() >= deadline:
                        return None
                    time.sleep(min(_POLL, max(deadline - time.monotonic(), 0.0)))
            result = self.container.wait()  # returns at once when it has exited
            state = self._state()
        except docker.errors.NotFound:
            status = self._status or ExitStatus(
                exit_code=None, error="the container disappeared before its exit was recorded"
            )
            self._status = status
            return status
        code = result.get("StatusCode", state.get("ExitCode"))
        status = self._exit_status(int(code) if code is not None else None, state)
        if self._daemon_lost and not status.cancelled and not (code == 0 and status.error is None):
            status = ExitStatus(exit_code=status.exit_code, error=RUNTIME_LOST, runtime_lost=True)
        self._status = status
        return status

    def _exit_status(self, code: int | None, state: dict[str, Any]) -> ExitStatus:
        oom = bool(state.get("OOMKilled"))
        with self._lock:
            cancelled = self._cancelled
        if cancelled:
            return ExitStatus(exit_code=code, error="cancelled", oom_killed=oom, cancelled=True)
        if oom and code == 0:
            # Some process was OOM-killed (e.g. a data loader worker) but the task coped with it.
            log.warning("task %s: a process was killed for memory, but the task exited 0", self.spec.task_id)
            return ExitStatus(exit_code=0)
        if oom:
            if self._memory_gb is not None:
                why = f"killed after exceeding the memory limit of {format_gb(self._memory_gb)} GB"
            else:
                why = "killed by the kernel's OOM killer"
            return ExitStatus(exit_code=code, error=f"out of memory: {why}", oom_killed=True)
        if code == 0:
            return ExitStatus(exit_code=0)
        daemon_error = state.get("Error") or ""
        if code == 137:
            error = "killed (exit code 137)"
        elif code is None:
            error = "the container's exit code is unknown"
        else:
            error = f"exit code {code}"
        if daemon_error:
            error = f"{error}: {daemon_error}"
        return ExitStatus(exit_code=code, error=error)

    def stop(self, grace: float = 10.0) -> None:
        import docker.errors

        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            running = self._state().get("Status") in ("running", "restarting", "paused", "created")
        except docker.errors.NotFound:
            return
        if not running:
            return
        with self._lock:
            self._cancelled = True
        # Docker sends the stop signal (SIGTERM), waits `grace` whole seconds, then SIGKILLs.
        with contextlib.suppress(docker.errors.NotFound):
            self.container.stop(timeout=max(0, math.ceil(grace)))

    def cleanup(self) -> None:
        import docker.errors

        if self._removed:
            return
        if self._status is None:
            with contextlib.suppress(docker.errors.APIError):
                if self._state().get("Status") in ("exited", "dead"):
                    self.wait()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        self._removed = True
        if self._watchdog is not None:
            self._watchdog.forget_container(self.id)
        if self._status is None:
            self._status = ExitStatus(exit_code=None, error="removed before it finished")

    @property
    def running(self) -> bool:
        return self._status is None and not self._removed


class DockerExecutor:
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

    def set_slots(self, slots: int) -> None:
        """The worker's batch slots, known once it registers: an automatic default limit is
        this host's share per slot."""
        share: tuple[float, float] | None = None
        if self._memory_gb_setting is None or self._cpus_setting is None:
            share = host_share(slots)
        memory = share[0] if self._memory_gb_setting is None and share else self._memory_gb_setting
        cpus = share[1] if self._cpus_setting is None and share else self._cpus_setting
        self.default_memory_gb = memory or None  # 0: no limit
        self.default_cpus = cpus or None

    def limits(self, spec: ExecSpec) -> tuple[float | None, float | None]:
        """(memory GiB, CPUs) the container gets: the task's own, else the worker's default."""
        memory = spec.memory_gb if spec.memory_gb is not None else self.default_memory_gb
        cpus = spec.cpu if spec.cpu is not None else self.default_cpus
        return memory, cpus

    # -- start ---------------------------------------------------------------------------------
    def ensure_image(self, image: str) -> None:
        """Pull `image` unless it is present locally."""
        import docker.errors

        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot look up image {image!r}: {_explain(exc)}") from exc
        log.info("pulling image %s", image)
        try:
            self.client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise ExecutorError(
                f"image {image!r} not found locally and could not be pulled: {_explain(exc)}"
            ) from exc

    def container_config(self, spec: ExecSpec, image: str) -> dict[str, Any]:
        """The keyword arguments for containers.create (no side effects; tests read it)."""
        import docker.types

        workspace = spec.workspace.resolve()
        workdir = spec.workdir if spec.workdir.is_absolute() else spec.workspace / spec.workdir
        try:
            rel = workdir.resolve().relative_to(workspace)
        except ValueError:
            raise ExecutorError(
                f"the working directory {str(spec.workdir)!r} is outside the workspace {str(spec.workspace)!r}"
            ) from None
        container_workdir = (Path(CONTAINER_WORKSPACE) / rel).as_posix()
        to_container = PathMapper(spec.workspace)
        env = {k: to_container(v) for k, v in spec.env.items()}
        # Inside the container the assigned GPUs are numbered from 0 (see the module docstring).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(spec.gpus)))
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        config: dict[str, Any] = {
            "image": image,
            "command": [to_container(a) for a in spec.command],
            "name": container_name(spec),
            "labels": {
                LABEL_TASK: spec.task_id,
                LABEL_WORKER: spec.worker_id,
                LABEL_ATTEMPT: str(spec.attempt),
                LABEL_SERVER: spec.server_id or "",
            },
            "volumes": {str(workspace): {"bind": CONTAINER_WORKSPACE, "mode": "rw"}},
            "mounts": self._readonly_mounts(spec, workspace, container_workdir),
            "working_dir": container_workdir,
            "environment": env,
            "init": self.init,
            "stdin_open": False,
            "tty": False,
            "privileged": False,
            "cap_drop": ["ALL"],
            "cap_add": list(self.cap_add),
            # setuid binaries and file capabilities grant nothing: the capabilities above are all
            # a task's processes can ever hold.
            "security_opt": ["no-new-privileges"],
            "ipc_mode": "private",
            "network_mode": self.network,
        }
        if spec.ports:
            config.update(self._published(spec))
        if self.pids_limit:
            config["pids_limit"] = self.pids_limit
        if self.user is not None:
            config["user"] = self.user
        memory_gb, cpus = self.limits(spec)
        if cpus is not None:
            config["nano_cpus"] = int(cpus * 1e9)
        if memory_gb is not None:
            limit = memory_limit(memory_gb)
            config["mem_limit"] = limit
            config["memswap_limit"] = limit  # equal to the memory limit: no swap
        if spec.gpus:
            config["device_requests"] = [
                docker.types.DeviceRequest(device_ids=[str(i) for i in spec.gpus], capabilities=[["gpu"]])
            ]
        return config

    def _published(self, spec: ExecSpec) -> dict[str, Any]:
        """spec.ports as Docker port bindings on spec.bind_host."""
        if self.network == "none":
            raise ExecutorError(
                "this worker's containers have no network (--network none), so a service's port "
                "cannot be published: use another network to run services"
            )
        if self.network == "host":
            # Published ports mean nothing on the host's network: the server binds the port itself.
            if any(host != container for host, container in spec.ports):
                raise ExecutorError("with --network host a container port must equal its host port")
            return {}
        return {"ports": {f"{container}/tcp": (spec.bind_host, host) for host, container in spec.ports}}

    def _readonly_mounts(self, spec: ExecSpec, workspace: Path, container_workdir: str) -> list[Any]:
        """spec.readonly_mounts as read-only binds of single files over their workspace paths."""
        import docker.types

        mounts = []
        for host_file, rel in spec.readonly_mounts:
            target = readonly_target(container_workdir, rel)
            source = Path(host_file).resolve()
            if not source.is_file():
                raise ExecutorError(f"read-only mount {rel!r}: {str(host_file)!r} is not a file")
            # Docker resolves the target inside the container; still, a link planted at that path
            # in the workspace (from the snapshot) is refused rather than mounted through.
            placeholder = workspace / target[len(CONTAINER_WORKSPACE) + 1 :]
            if placeholder.is_symlink():
                raise ExecutorError(f"read-only mount path {rel!r} is a link in the workspace")
            mounts.append(docker.types.Mount(target=target, source=str(source), type="bind", read_only=True))
        return mounts

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


def container_name(spec: ExecSpec) -> str:
    task = re.sub(r"[^a-zA-Z0-9_.-]", "-", spec.task_id[:12])
    return f"fetchml-{task}-{spec.attempt}"


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    text = explanation if isinstance(explanation, str) and explanation else str(exc)
    return text.strip() or type(exc).__name__
