"""FetchmlClient: one object holding the transport and a client per domain."""

from __future__ import annotations

from typing import Any

from fetchml.client.artifacts import ArtifactsClient
from fetchml.client.audit import AuditClient
from fetchml.client.base import Transport, parse
from fetchml.client.config import ClientConfig, resolve
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
        self.tasks = TasksClient(self._transport)
        self.queue = QueueClient(self._transport)
        self.experiments = ExperimentsClient(self._transport)
        self.audit = AuditClient(self._transport)
        self.keys = KeysClient(self._transport)
        self.snapshots = SnapshotsClient(self._transport)
        self.workers = WorkersClient(self._transport)
        self.logs = LogsClient(self._transport)
        self.artifacts = ArtifactsClient(self._transport)
        self.scheduler = SchedulerClient(self._transport)
        self.reservations = ReservationClient(self._transport)
        self.streams = StreamsClient(self._transport)
        self.jupyter = JupyterClient(self._transport)
        self.jupyter_workers = JupyterWorkersClient(self._transport)
        self.plugins = PluginsClient(self._transport)

    @classmethod
    def from_config(cls, config: ClientConfig | None = None) -> FetchmlClient:
        cfg = config or resolve()
        return cls(cfg.server_url, cfg.api_key, timeout=cfg.timeout)

    def health(self) -> HealthResponse:
        return parse(self._transport.request("GET", "/health"), HealthResponse)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> FetchmlClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
