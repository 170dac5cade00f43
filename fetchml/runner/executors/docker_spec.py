"""What a task's container gets (the docker executor's spec): the image's command and environment
with host paths mapped to /workspace, the workspace and read-only dataset mounts, the labels,
the hardening options, published ports, GPUs and the memory / CPU / pids limits. See
fetchml.runner.executors.docker for the rules; nothing here talks to the daemon."""

from __future__ import annotations

import math
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from fetchml.runner.executors.base import ExecSpec, ExecutorError

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


def container_name(spec: ExecSpec) -> str:
    task = re.sub(r"[^a-zA-Z0-9_.-]", "-", spec.task_id[:12])
    return f"fetchml-{task}-{spec.attempt}"


class ContainerSpecMixin:
    """DockerExecutor's settings and how they become the arguments of containers.create."""

    init: bool
    user: str | None
    pids_limit: int
    network: str
    cap_add: tuple[str, ...]
    default_memory_gb: float | None
    default_cpus: float | None
    _memory_gb_setting: float | None
    _cpus_setting: float | None

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
        # Inside the container the assigned GPUs are numbered from 0 (see the docstring of
        # fetchml.runner.executors.docker).
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
