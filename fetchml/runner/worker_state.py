"""The state a worker's parts share: its settings, executor, caches, events and held attempts.

`Worker` (fetchml.runner.worker) is this state plus one mixin per part: registration
(fetchml.runner.registration), heartbeats and the lease (heartbeat), stopping (stopping),
claiming (claims), running one attempt (run_attempt) and its reports (reports).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from fetchml.client.api import FetchmlClient
from fetchml.runner.attempt import _Attempt
from fetchml.runner.datasets import DatasetCache, DatasetPolicy
from fetchml.runner.executors.base import Executor
from fetchml.runner.gpus import GpuProvider
from fetchml.runner.phases import PhaseLog
from fetchml.runner.workdir import prepare_work_dir
from fetchml.runner.worker_config import WorkerConfig, gpu_provider_for, make_executor
from fetchml.runner.workspace import SnapshotCache

if TYPE_CHECKING:
    from fetchml.runner.services import ServiceManager


class WorkerState:
    # Made last, by Worker: the service manager is handed the whole worker.
    services: ServiceManager

    def __init__(
        self,
        cfg: WorkerConfig,
        client: FetchmlClient,
        *,
        executor: Executor | None = None,
        gpu_provider: GpuProvider | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.executor = executor or make_executor(
            cfg.executor,
            default_image=cfg.default_image,
            stop_grace=cfg.stop_grace,
            docker={
                "pids_limit": cfg.pids_limit,
                "default_memory_gb": cfg.default_memory_gb,
                "default_cpus": cfg.default_cpus,
                "network": cfg.network,
            },
            run_as=cfg.run_as,
            pass_env=cfg.pass_env,
        )
        self.gpu_provider = gpu_provider or gpu_provider_for(cfg)
        self.worker_id = cfg.name
        self.server_id: str | None = None
        self.stop_event = threading.Event()
        # request_stop(): a graceful stop is under way (no claims; running tasks get a grace).
        self.stopping = threading.Event()
        self._stop_requests = 0
        self._drain_deadline = 0.0
        self._hurry = threading.Event()  # a second stop request: no more grace
        self._give_up = threading.Event()  # a third: stop retrying reports
        self._hb_wake = threading.Event()
        self._report_until: float | None = None  # set when the worker exits: reports stop then
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self.phase_log = PhaseLog(cfg.phase_log)
        self._draining = False
        # Run as another user, tasks must reach their workspace but nothing else of the worker's.
        self.task_owner: tuple[int, int] | None = getattr(self.executor, "task_owner", None)
        self.workspaces_dir = prepare_work_dir(cfg.work_dir, cfg.name, self.task_owner)
        self.snapshots = SnapshotCache(cfg.work_dir / "snapshots", client)
        self.datasets = DatasetCache(
            cfg.work_dir / "datasets",
            DatasetPolicy(
                roots=tuple(cfg.dataset_roots),
                allow_private=cfg.allow_private_datasets,
                max_bytes=cfg.max_dataset_bytes,
            ),
        )
        self.heartbeat_interval = 2.0
        self.heartbeat_timeout = 30.0
        self._last_contact = time.monotonic()  # the last successful heartbeat (or registration)
        self._lease_lost = False
        self.claim_wait = 20.0
        self.claim_takes_report = False  # the server said so at registration
        self.report_takes_started = False  # likewise
        self.slots = 1
        self.registered = threading.Event()  # set once the first registration succeeded or failed
        self.registration_error: str | None = None
