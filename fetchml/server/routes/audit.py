from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from fetchml.core.audit import AuditCheckpointList, AuditPublicKey, CheckpointedVerification
from fetchml.core.enums import CONTRACT_AUDIT_EVENT_TYPES, AuditEventType
from fetchml.core.models import MAX_INT32, AuditEventList, ChainRoot
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY, READERS


class AuditController(Controller):
    path = "/v1/audit"
    opt = ADMIN_ONLY
    tags = ["Audit"]

    @get(
        "/events",
        summary="Query audit events, newest first",
        description=(
            "By default only events whose event_type is in the contract's enum, so a client "
            "generated from the contract can read every page. Our other types (job_cancelled, "
            "experiment_created, key_created, key_revoked, priority_changed, reservation_*) are "
            "returned when asked for: `event_type=<one of them>`, or `include_extended=true` for "
            "every type. `total` counts what the query returns. /v1/audit/verify and "
            "/v1/audit/chain-root always cover every event."
        ),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        start: Annotated[datetime | None, Parameter(query="from")] = None,
        end: Annotated[datetime | None, Parameter(query="to")] = None,
        event_type: AuditEventType | None = None,
        user_id: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT32)] = 0,
        after_seq: Annotated[
            int | None,
            Parameter(
                ge=0,
                required=False,
                description="Only events past this sequence number, oldest first (our extension: "
                "a cursor for reading the whole chain, as `fetchml audit export` does).",
            ),
        ] = None,
        include_extended: Annotated[
            bool,
            Parameter(
                required=False,
                description="Also return event types beyond the contract's enum (our extension).",
            ),
        ] = False,
    ) -> AuditEventList:
        return await services_of(request).audit.list_events(
            start=start,
            end=end,
            event_type=event_type,
            # One type asked for by name is returned whatever it is; otherwise the contract's.
            event_types=None if include_extended or event_type is not None else CONTRACT_AUDIT_EVENT_TYPES,
            user_id=user_id,
            limit=limit,
            offset=offset,
            after_seq=after_seq,
        )

    @post(
        "/verify",
        status_code=200,
        summary="Verify the audit hash chain and its signed checkpoints",
        description=(
            "Walks the hash chain, then checks every checkpoint: a known key, a good signature, "
            "its root equal to the event hash at its sequence number, and none beyond the end of "
            "the chain (a truncated tail). A broken chain is reported by its first bad sequence "
            "number; a bad checkpoint also sets bad_checkpoint. checkpoints_verified, "
            "bad_checkpoint and latest_checkpoint extend the contract; the last two are absent "
            "when they do not apply."
        ),
    )
    async def verify(self, request: Request[Any, Any, Any]) -> CheckpointedVerification:
        return await services_of(request).audit.verify(principal_of(request), client_ip(request))

    @get(
        "/checkpoints",
        summary="Signed audit checkpoints, oldest first",
        description=(
            "Each signs, with the server's Ed25519 key (key_id), the bytes "
            "`fetchml-audit-checkpoint/v1\\n{sequence_num}\\n{root}\\n{created_at}` (created_at as "
            "RFC 3339 UTC with microseconds and Z); signature is base64. `after` returns those past "
            "a sequence number (for paging by cursor); total counts them all."
        ),
    )
    async def checkpoints(
        self,
        request: Request[Any, Any, Any],
        after: Annotated[int | None, Parameter(ge=0, required=False)] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT32)] = 0,
    ) -> AuditCheckpointList:
        return await services_of(request).checkpoints.list(after=after, offset=offset, limit=limit)

    @get("/chain-root", summary="Latest event hash of the chain")
    async def chain_root(self, request: Request[Any, Any, Any]) -> ChainRoot:
        return await services_of(request).audit.chain_root()


# Outside the controller: its admin-only guard would add to this route's own.
@get(
    "/v1/audit/public-key",
    opt=READERS,
    tags=["Audit"],
    summary="This server's audit checkpoint public key",
    description=(
        "The Ed25519 public key (PEM) that verifies this server's checkpoints, and its key_id "
        "(the first 16 hex digits of sha256 over the raw key). Not secret: any valid API key may "
        "read it. Keep a copy off the server to verify exports with."
    ),
)
async def audit_public_key(request: Request[Any, Any, Any]) -> AuditPublicKey:
    return services_of(request).checkpoints.public_key()
