"""API keys: creation, listing, revocation and authentication.

Keys are `fml_` + 256 random bits, shown once, stored only as SHA-256. Lookup is by the
digest (an index hit leaks nothing useful: an attacker cannot steer a SHA-256 prefix), and
the stored digest is compared with hmac.compare_digest anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, Role
from fetchml.core.errors import (
    ConflictError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)
from fetchml.core.models import ApiKeyInfo, CreatedKey
from fetchml.services.base import read
from fetchml.services.principal import LOCAL_OPERATOR, Principal
from fetchml.services.write_queue import Tx, WriteQueue, run_write
from fetchml.store.db import Database
from fetchml.store.tables import ApiKeyRow

KEY_PREFIX = "fml_"
MAX_KEY_LENGTH = 256


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _key_info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        user_id=row.user_id,
        role=Role(row.role),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        worker_name=bound_worker_name(row),
    )


def bound_worker_name(row: ApiKeyRow) -> str | None:
    """The worker name a worker key may register. Keys made before names were bound (no
    worker_name stored) are bound to their user name, the default for new keys too."""
    if row.role != Role.WORKER.value:
        return None
    return row.worker_name or row.user_id


def create_key_op(
    user: str,
    role: Role,
    actor: Principal,
    ip_address: str | None = None,
    *,
    worker_name: str | None = None,
    reason: str | None = None,
) -> Callable[[Tx], CreatedKey]:
    """`reason`, when given, is recorded in the audit event's metadata (why no one asked)."""
    if worker_name is not None and role is not Role.WORKER:
        raise ValidationError("worker_name is only valid for role worker")
    bound = (worker_name or user) if role is Role.WORKER else None

    def op(tx: Tx) -> CreatedKey:
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id="key_" + secrets.token_hex(6),
            key_hash=hash_key(raw),
            prefix=raw[:12],
            user_id=user,
            role=role.value,
            created_at=tx.clock.now(),
            worker_name=bound,
        )
        tx.insert(ApiKeyRow, row.model_dump())
        tx.audit(
            AuditEventType.KEY_CREATED,
            user_id=actor.user_id,
            resource=f"key:{row.id}",
            action="create",
            ip_address=ip_address,
            metadata={
                "key_user": user,
                "role": role.value,
                "prefix": row.prefix,
                **({"worker_name": bound} if bound else {}),
                **({"reason": reason} if reason else {}),
            },
        )
        return CreatedKey(**_key_info(row).model_dump(), key=raw)

    return op


def first_admin_key_op(
    user: str, actor: Principal, *, before_commit: Callable[[CreatedKey], None] | None = None
) -> Callable[[Tx], CreatedKey | None]:
    """An admin key for `user` if the database has no API key at all (revoked ones count), else
    None. The check and the insert share one write transaction, which holds the database-wide
    write lock: servers starting together on one database make one key between them.

    `before_commit` receives the new key inside the transaction: if it raises (the key could not
    be handed to anyone), nothing is committed and the next start tries again."""

    def op(tx: Tx) -> CreatedKey | None:
        if any_keys_query(tx.session):
            return None
        created = create_key_op(user, Role.ADMIN, actor, reason="first run on loopback")(tx)
        if before_commit is not None:
            before_commit(created)
        return created

    return op


def any_keys_query(session: Session) -> bool:
    """Whether the database holds any API key, revoked ones included."""
    return session.scalars(select(col(ApiKeyRow.id)).limit(1)).first() is not None


def revoke_key_op(key_id: str, actor: Principal, ip_address: str | None = None) -> Callable[[Tx], ApiKeyInfo]:
    def op(tx: Tx) -> ApiKeyInfo:
        row = tx.session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFoundError(f"No API key {key_id}")
        if row.revoked_at is not None:
            raise ConflictError(f"API key {key_id} is already revoked")
        row.revoked_at = tx.clock.now()
        tx.audit(
            AuditEventType.KEY_REVOKED,
            user_id=actor.user_id,
            resource=f"key:{row.id}",
            action="revoke",
            ip_address=ip_address,
            metadata={"key_user": row.user_id, "prefix": row.prefix},
        )
        return _key_info(row)

    return op


def list_keys_query(session: Session) -> list[ApiKeyInfo]:
    rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).all()  # type: ignore[arg-type]
    return [_key_info(r) for r in rows]


class KeyService:
    def __init__(self, db: Database, writer: WriteQueue, *, cache_seconds: float = 2.0) -> None:
        self.db = db
        self.writer = writer
        self.cache_seconds = cache_seconds
        # digest -> (principal, monotonic expiry). Positive hits only: a failure always
        # reaches the database, so it is always audited.
        self._cache: dict[str, tuple[Principal, float]] = {}
        # Keys that exist only in this process's memory: the embedded worker's, and the one
        # `fetchml run` uses for its embedded server. They die with the process.
        self._static: dict[str, Principal] = {}

    def add_process_key(
        self, user: str, role: Role, *, key_id: str | None = None, worker_name: str | None = None
    ) -> str:
        """`key_id` names the holder across restarts (the embedded worker re-registers under
        the same name with a new key each time the server starts). A worker key is bound to
        `worker_name` (default: `user`), like a stored one."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        self._static[hash_key(raw)] = Principal(
            user_id=user,
            role=role,
            key_id=key_id or f"proc_{secrets.token_hex(4)}",
            worker_name=(worker_name or user) if role is Role.WORKER else None,
        )
        return raw

    async def create(
        self,
        user: str,
        role: Role,
        actor: Principal,
        ip_address: str | None = None,
        *,
        worker_name: str | None = None,
    ) -> CreatedKey:
        return await self.writer.run(create_key_op(user, role, actor, ip_address, worker_name=worker_name))

    async def list(self) -> list[ApiKeyInfo]:
        return await read(self.db, list_keys_query)

    def any_exist(self) -> bool:
        """Whether the database holds any key, revoked ones included (blocking; at startup)."""
        with self.db.read() as session:
            return any_keys_query(session)

    def create_first_admin_key(
        self, user: str, *, before_commit: Callable[[CreatedKey], None] | None = None
    ) -> CreatedKey | None:
        """first_admin_key_op in a transaction of its own on the calling thread (blocking; at
        startup, before serving), not through the writer: `before_commit` may fail on its
        own, and the writer would retry a failed batch's ops one by one."""
        return run_write(
            self.db, first_admin_key_op(user, LOCAL_OPERATOR, before_commit=before_commit), self.writer.clock
        )

    async def revoke(self, key_id: str, actor: Principal, ip_address: str | None = None) -> ApiKeyInfo:
        info = await self.writer.run(revoke_key_op(key_id, actor, ip_address))
        self._cache = {h: v for h, v in self._cache.items() if v[0].key_id != key_id}
        return info

    async def authenticate(
        self, raw_key: str | None, ip_address: str | None, *, failure_gate: Callable[[], int] | None = None
    ) -> Principal:
        """The principal of a valid key. On failure, `failure_gate` (if given) is asked first:
        a non-zero answer is a wait in seconds, and the caller is rate limited instead of being
        audited, so a flood of made-up keys cannot become a flood of audit rows."""
        now = time.monotonic()
        if raw_key and len(raw_key) <= MAX_KEY_LENGTH:
            digest = hash_key(raw_key)
            static = self._static.get(digest)
            if static is not None:
                return static
            hit = self._cache.get(digest)
            if hit is not None and hit[1] > now:
                return hit[0]
            row = await read(
                self.db,
                lambda s: s.scalars(select(ApiKeyRow).where(col(ApiKeyRow.key_hash) == digest)).first(),
            )
            if row is not None and hmac.compare_digest(row.key_hash, digest) and row.revoked_at is None:
                principal = Principal(
                    user_id=row.user_id,
                    role=Role(row.role),
                    key_id=row.id,
                    worker_name=bound_worker_name(row),
                )
                if self.cache_seconds > 0:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[digest] = (principal, now + self.cache_seconds)
                return principal
            reason = "revoked key" if row is not None else "unknown key"
            user = row.user_id if row is not None else None
            prefix = raw_key[:12]
        else:
            reason, user, prefix = ("missing key" if not raw_key else "malformed key"), None, None

        if failure_gate is not None and (wait := failure_gate()):
            raise RateLimitedError(retry_after=wait)

        def record(tx: Tx) -> None:
            tx.audit(
                AuditEventType.AUTH_ATTEMPT,
                user_id=user,
                resource="api",
                action="authenticate",
                success=False,
                ip_address=ip_address,
                error=reason,
                metadata={"key_prefix": prefix} if prefix else {},
            )

        await self.writer.run(record)
        raise UnauthorizedError()
