"""The worker's settings (`WorkerConfig`) and what they choose: the executor and the GPU provider."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetchml.runner.datasets import DEFAULT_MAX_DATASET_BYTES
from fetchml.runner.executors.base import Executor
from fetchml.runner.gpus import GpuProvider, NvmlGpuProvider, StaticGpuProvider


@dataclass
class WorkerConfig:
    name: str
    work_dir: Path
    executor: str = "auto"  # auto | docker | local
    batch_slots: int | None = None  # default: one per GPU, at least 1
    gpus: int | None = None  # with gpu_type: override NVML detection (like Slurm's gres.conf)
    gpu_type: str | None = None
    default_image: str | None = None
    # Seconds between SIGTERM and SIGKILL when a task is stopped, and how long running tasks may
    # go on finishing after the worker is asked to stop (SIGTERM) before they are stopped.
    stop_grace: float = 10.0
    # Seconds a single-node attempt's local process may take to end before its `running` report is
    # sent: one that ends sooner is reported once, its end saying it started (one request and
    # one server transaction fewer for the shortest tasks). A longer task shows `running` this
    # much later. 0: report running at once.
    running_report_window: float = 0.01
    # Give up registering after this many seconds of an unreachable server (None: never).
    connect_timeout: float | None = None
    keep_workspaces: bool = False
    # Append each attempt's time per phase to this file (fetchml.runner.phases); None: not kept.
    phase_log: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)
    # Local executor only: the unprivileged user tasks run as (the worker must be root), and
    # names of the worker's environment variables that tasks may see besides the allow-list.
    run_as: str | None = None
    pass_env: tuple[str, ...] = ()
    # Docker executor only: container limits and network (see DockerExecutor). Memory / CPUs for
    # tasks that ask for none: None is an equal share of the host per batch slot, 0 no limit.
    pids_limit: int = 4096
    default_memory_gb: float | None = None
    default_cpus: float | None = None
    network: str = "bridge"
    # Datasets (see fetchml.runner.datasets): local sources only under these folders (none:
    # no local sources), URLs to non-public addresses only when allowed, and a size cap.
    dataset_roots: tuple[Path, ...] = ()
    allow_private_datasets: bool = False
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    # Jupyter services (fetchml.runner.services): how many at once, the host ports they take,
    # the address put in their URLs, the address a local server binds (docker publishes its port
    # there), how long one may take to answer, and how often a running one is probed.
    service_slots: int = 1
    service_ports: tuple[int, int] = (8900, 8999)
    service_host: str = "127.0.0.1"
    service_bind: str = "127.0.0.1"
    service_start_timeout: float = 120.0
    service_probe_interval: float = 5.0


def make_executor(
    kind: str,
    *,
    default_image: str | None,
    stop_grace: float,
    docker: dict[str, Any] | None = None,
    run_as: str | None = None,
    pass_env: tuple[str, ...] = (),
) -> Executor:
    """`docker`: DockerExecutor's keyword options (pids_limit, default_memory_gb, ...).
    `run_as`, `pass_env`: the local executor's (see LocalExecutor)."""
    if kind == "auto":
        from fetchml.runner.executors.docker import docker_available

        kind = "docker" if docker_available() else "local"
    if run_as is not None and kind != "local":
        raise ValueError(f"--run-as applies to the local executor only (this worker uses {kind})")
    if kind == "docker":
        from fetchml.runner.executors.docker import DockerExecutor

        return DockerExecutor(default_image=default_image, stop_grace=stop_grace, **(docker or {}))
    if kind == "local":
        from fetchml.runner.executors.local import LocalExecutor

        return LocalExecutor(stop_grace=stop_grace, run_as=run_as, pass_env=pass_env)
    raise ValueError(f"unknown executor {kind!r}: use auto, docker or local")


def gpu_provider_for(cfg: WorkerConfig) -> GpuProvider:
    if cfg.gpus is not None:
        return StaticGpuProvider(cfg.gpus, cfg.gpu_type or "gpu")
    return NvmlGpuProvider()
