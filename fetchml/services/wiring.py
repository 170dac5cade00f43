"""Wires the services to one database and one writer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fetchml import __version__
from fetchml.core.clock import Clock
from fetchml.core.events import FeedEvent
from fetchml.events.bus import EventBus
from fetchml.events.feed import EventFeed
from fetchml.host.clock import clock_from_settings
from fetchml.host.settings import Settings
from fetchml.services.artifacts import ArtifactService
from fetchml.services.audit import AuditService
from fetchml.services.base import read
from fetchml.services.checkpoints import CheckpointService
from fetchml.services.claims import ClaimService
from fetchml.services.experiments import ExperimentService
from fetchml.services.feedlog import NOTIFY_CHANNEL, events_after, oldest_and_newest
from fetchml.services.health import HealthService
from fetchml.services.jupyter import JupyterServices
from fetchml.services.keys import KeyService
from fetchml.services.leases import LeaseService
from fetchml.services.logs import LogService
from fetchml.services.metrics import MetricsService
from fetchml.services.placement import Placer
from fetchml.services.plugins import PluginService
from fetchml.services.queue import QueueService
from fetchml.services.reservations import ReservationService
from fetchml.services.scheduler_status import SchedulerService
from fetchml.services.sidecars import SidecarSupervisor, tensorboard_logdir
from fetchml.services.snapshots import SnapshotService
from fetchml.services.streams import StreamService
from fetchml.services.tasks import TaskService
from fetchml.services.workers import WorkerService
from fetchml.services.write_queue import WriteQueue
from fetchml.store.db import Database
from fetchml.store.listen import PgListener


class Services:
    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        # The one time source of every rule (aging, leases, reservations, rate limits): tests pass
        # a ManualClock, or set FETCHML_CLOCK_OFFSET_FILE to move a real server's time.
        self.clock = clock if clock is not None else clock_from_settings(settings.clock_offset_file)
        # Always, PostgreSQL too: snapshots, artifacts, the audit signing key and the embedded
        # worker live there.
        settings.ensure_data_dir()
        self.db = Database(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            sqlite_busy_timeout=settings.sqlite_busy_timeout,
        )
        # A stall of a quarter of the lease already eats into the margin heartbeats leave, so
        # it counts as one: the sweeper then gives every lease a full timeout from its end.
        self.writer = WriteQueue(self.db, stall_threshold=settings.heartbeat_timeout / 4, clock=self.clock)
        self.checkpoints = CheckpointService(
            self.db,
            self.writer,
            data_dir=settings.data_dir,
            key_path=settings.audit_signing_key,
            every_events=settings.audit_checkpoint_events,
            every_seconds=settings.audit_checkpoint_seconds,
            parallel_min_events=settings.audit_verify_parallel_min_events,
        )
        self.audit = AuditService(
            self.db, self.writer, list_budget=settings.max_list_bytes, checkpoints=self.checkpoints
        )
        self.keys = KeyService(self.db, self.writer, cache_seconds=settings.auth_cache_seconds)
        self.bus = EventBus()
        self.placer = Placer(
            aging_rate=settings.priority_aging_per_hour,
            aging_cap=settings.priority_aging_cap,
            lease_seconds=settings.heartbeat_timeout,
            time_limit_unit=settings.time_limit_unit_seconds,
        )
        self.tasks = TaskService(
            self.db,
            self.writer,
            bus=self.bus,
            default_max_retries=settings.default_max_retries,
            aging_rate=settings.priority_aging_per_hour,
            aging_cap=settings.priority_aging_cap,
            placer=self.placer,
            max_datasets=settings.max_datasets_per_task,
            list_budget=settings.max_list_bytes,
            shared_contents=settings.shared_task_contents,
            idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
            default_time_limit=settings.default_time_limit_minutes,
            max_time_limit=settings.max_time_limit_minutes,
        )
        self.workers = WorkerService(self.db, self.writer, self.bus, settings)
        self.claims = ClaimService(self.writer, self.bus, settings, self.placer)
        self.leases = LeaseService(self.writer, self.bus, settings)
        self.reservations = ReservationService(self.db, self.writer)
        self.jupyter = JupyterServices(self.db, self.writer, self.bus, settings, self.placer)
        self.sidecars = SidecarSupervisor(
            self.db,
            settings.data_dir,
            self.clock,
            enabled=settings.sidecars,
            interval=settings.sidecar_probe_interval,
        )
        self.plugins = PluginService(self.db, self.writer, self.clock, __version__, self.sidecars)
        self.logs = LogService(
            self.db,
            self.writer,
            self.bus,
            max_lines=settings.max_log_lines_per_task,
            max_bytes=settings.max_log_bytes_per_task,
        )
        self.artifacts = ArtifactService(
            self.db,
            self.writer,
            settings.data_dir,
            settings.max_artifact_bytes,
            tensorboard_dir=tensorboard_logdir(settings.data_dir),
        )
        self.experiments = ExperimentService(self.db, self.writer)
        self.queue = QueueService(self.db, timezone=settings.timezone, clock=self.clock)
        self.scheduler = SchedulerService(self.db, self.clock)
        self.health = HealthService(self.db, self.writer)
        self.metrics = MetricsService(self.db)
        self.snapshots = SnapshotService(
            settings.data_dir, settings.max_snapshot_bytes, db=self.db, writer=self.writer
        )
        # The live feed: this process's commits, and on PostgreSQL every other server's too.
        self.writer.events_window = settings.event_replay_window
        self.feed = EventFeed(
            self.bus, self._events_after, keepalive_seconds=settings.stream_keepalive_seconds
        )
        self.writer.on_commit.append(self.feed.committed)
        self.listener: PgListener | None = None
        self.streams = StreamService(
            self.db,
            self.feed,
            tasks=self.tasks,
            workers=self.workers,
            scheduler=self.scheduler,
            max_per_key=settings.max_streams_per_key,
            replay_window=settings.event_replay_window,
        )

    async def _events_after(self, after: int, limit: int) -> list[FeedEvent]:
        return await read(self.db, lambda s: events_after(s, after, limit=limit))

    async def start_feed(self) -> None:
        """On the app's event loop: the feed starts after what is already committed."""
        newest = await read(self.db, lambda s: oldest_and_newest(s)[1])
        self.feed.start(newest)
        if not self.db.is_sqlite:
            self.listener = PgListener(
                self.db.url, NOTIFY_CHANNEL, self.feed.notified, on_connect=self.feed.reconnected
            )
            self.listener.start()

    async def stop_feed(self) -> None:
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await asyncio.to_thread(listener.stop)
        await self.feed.stop()

    def start(self) -> None:
        self.db.migrate()
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()
        self.db.dispose()
