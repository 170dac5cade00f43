from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from fetchml.core.enums import AuditEventType
from fetchml.core.models import MAX_INT32, AuditEventList, ChainRoot, VerificationResult
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY


class AuditController(Controller):
    path = "/v1/audit"
    guards = ADMIN_ONLY
    tags = ["Audit"]

    @get("/events", summary="Query audit events, newest first")
    async def events(
        self,
        request: Request[Any, Any, Any],
        start: Annotated[datetime | None, Parameter(query="from")] = None,
        end: Annotated[datetime | None, Parameter(query="to")] = None,
        event_type: AuditEventType | None = None,
        user_id: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT32)] = 0,
    ) -> AuditEventList:
        return await services_of(request).audit.list_events(
            start=start, end=end, event_type=event_type, user_id=user_id, limit=limit, offset=offset
        )

    @post("/verify", status_code=200, summary="Verify the audit hash chain")
    async def verify(self, request: Request[Any, Any, Any]) -> VerificationResult:
        return await services_of(request).audit.verify(principal_of(request), client_ip(request))

    @get("/chain-root", summary="Latest event hash of the chain")
    async def chain_root(self, request: Request[Any, Any, Any]) -> ChainRoot:
        return await services_of(request).audit.chain_root()
