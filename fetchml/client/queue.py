from __future__ import annotations

from fetchml.client.base import DomainClient, parse
from fetchml.core.models import QueueStats


class QueueClient(DomainClient):
    def stats(self) -> QueueStats:
        return parse(self._t.request("GET", "/v1/queue"), QueueStats)
