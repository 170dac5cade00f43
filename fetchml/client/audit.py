from __future__ import annotations

from datetime import datetime
from typing import Any

from fetchml.client.base import DomainClient, parse
from fetchml.core.audit import AuditCheckpointList, AuditPublicKey, CheckpointedVerification
from fetchml.core.models import AuditEventList, ChainRoot


class AuditClient(DomainClient):
    def events(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        event_type: str | None = None,
        user_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after_seq: int | None = None,
        include_extended: bool = True,
    ) -> AuditEventList:
        """Every event type by default (include_extended=true): the server returns only the
        contract's types unless asked, and our client models know ours."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if include_extended:
            params["include_extended"] = "true"
        if after_seq is not None:
            params["after_seq"] = after_seq
        if start is not None:
            params["from"] = start.isoformat()
        if end is not None:
            params["to"] = end.isoformat()
        if event_type is not None:
            params["event_type"] = event_type
        if user_id is not None:
            params["user_id"] = user_id
        return parse(self._t.request("GET", "/v1/audit/events", params=params), AuditEventList)

    def verify(self) -> CheckpointedVerification:
        return parse(self._t.request("POST", "/v1/audit/verify"), CheckpointedVerification)

    def checkpoints(
        self, *, after: int | None = None, limit: int = 100, offset: int = 0
    ) -> AuditCheckpointList:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if after is not None:
            params["after"] = after
        return parse(self._t.request("GET", "/v1/audit/checkpoints", params=params), AuditCheckpointList)

    def public_key(self) -> AuditPublicKey:
        return parse(self._t.request("GET", "/v1/audit/public-key"), AuditPublicKey)

    def chain_root(self) -> ChainRoot:
        return parse(self._t.request("GET", "/v1/audit/chain-root"), ChainRoot)
