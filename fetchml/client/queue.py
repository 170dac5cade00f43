from __future__ import annotations

from fetchml.client.base import DomainClient
from fetchml.core.models import QueueStats


class QueueClient(DomainClient):
    def stats(self) -> QueueStats:
        return QueueStats.model_validate(self._t.request("GET", "/v1/queue").json())
