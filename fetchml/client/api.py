"""FetchmlClient: one object holding the transport and a client per domain."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from fetchml.client.base import Transport, parse
from fetchml.client.config import ClientConfig, resolve

# Domain clients are made on first use: each imports its own models, and a command that lists
# tasks should not pay for the audit, artifact and snapshot models (CLI start-up, issue 17).
if TYPE_CHECKING:
    from fetchml.client.artifacts import ArtifactsClient
    from fetchml.client.audit import AuditClient
    from fetchml.client.experiments import ExperimentsClient
    from fetchml.client.jupyter import JupyterClient, JupyterWorkersClient
    from fetchml.client.keys import KeysClient
    from fetchml.client.logs import LogsClient
    from fetchml.client.plugins import PluginsClient
    from fetchml.client.queue import QueueClient
    from fetchml.client.reservations import ReservationClient
    from fetchml.client.scheduler import SchedulerClient
    from fetchml.client.snapshots import SnapshotsClient
    from fetchml.client.streams import StreamsClient
    from fetchml.client.tasks import TasksClient
    from fetchml.client.workers import WorkersClient
    from fetchml.core.models import HealthResponse


class FetchmlClient:
    def __init__(self, server_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self._transport = Transport(server_url, api_key, timeout)
        self.server_url = self._transport.base_url

    @cached_property
    def tasks(self) -> TasksClient:
        from fetchml.client.tasks import TasksClient

        return TasksClient(self._transport)

    @cached_property
    def queue(self) -> QueueClient:
        from fetchml.client.queue import QueueClient

        return QueueClient(self._transport)

    @cached_property
    def experiments(self) -> ExperimentsClient:
        from fetchml.client.experiments import ExperimentsClient

        return ExperimentsClient(self._transport)

    @cached_property
    def audit(self) -> AuditClient:
        from fetchml.client.audit import AuditClient

        return AuditClient(self._transport)

    @cached_property
    def keys(self) -> KeysClient:
        from fetchml.client.keys import KeysClient

        return KeysClient(self._transport)

    @cached_property
    def snapshots(self) -> SnapshotsClient:
        from fetchml.client.snapshots import SnapshotsClient

        return SnapshotsClient(self._transport)

    @cached_property
    def workers(self) -> WorkersClient:
        from fetchml.client.workers import WorkersClient

        return WorkersClient(self._transport)

    @cached_property
    def logs(self) -> LogsClient:
        from fetchml.client.logs import LogsClient

        return LogsClient(self._transport)

    @cached_property
    def artifacts(self) -> ArtifactsClient:
        from fetchml.client.artifacts import ArtifactsClient

        return ArtifactsClient(self._transport)

    @cached_property
    def scheduler(self) -> SchedulerClient:
        from fetchml.client.scheduler import SchedulerClient

        return SchedulerClient(self._transport)

    @cached_property
    def reservations(self) -> ReservationClient:
        from fetchml.client.reservations import ReservationClient

        return ReservationClient(self._transport)

    @cached_property
    def streams(self) -> StreamsClient:
        from fetchml.client.streams import StreamsClient

        return StreamsClient(self._transport)

    @cached_property
    def jupyter(self) -> JupyterClient:
        from fetchml.client.jupyter import JupyterClient

        return JupyterClient(self._transport)

    @cached_property
    def jupyter_workers(self) -> JupyterWorkersClient:
        from fetchml.client.jupyter import JupyterWorkersClient

        return JupyterWorkersClient(self._transport)

    @cached_property
    def plugins(self) -> PluginsClient:
        from fetchml.client.plugins import PluginsClient

        return PluginsClient(self._transport)

    @classmethod
    def from_config(cls, config: ClientConfig | None = None) -> FetchmlClient:
        cfg = config or resolve()
        return cls(cfg.server_url, cfg.api_key, timeout=cfg.timeout)

    def health(self) -> HealthResponse:
        from fetchml.core.models import HealthResponse

        return parse(self._transport.request("GET", "/health"), HealthResponse)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> FetchmlClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
