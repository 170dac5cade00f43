"""Wire models of the audit log: its events, their pages, a verification's result and the
chain's root."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fetchml.core.enums import AuditEventType
from fetchml.core.wire import Wire


class AuditEvent(Wire):
    sequence_num: int
    timestamp: datetime
    event_type: AuditEventType
    user_id: str | None = None
    resource: str | None = None
    action: str | None = None
    success: bool
    ip_address: str | None = None
    error: str | None = None
    prev_hash: str
    event_hash: str
    metadata: dict[str, Any] = {}


class AuditEventList(Wire):
    events: list[AuditEvent]
    total: int
    limit: int
    offset: int


class VerificationResult(Wire):
    valid: bool
    total_events: int
    first_tampered: int | None = None
    chain_root_hash: str | None = None
    verified_at: datetime
    reason: str | None = None


class ChainRoot(Wire):
    root_hash: str
    timestamp: datetime | None = None
    total_events: int
