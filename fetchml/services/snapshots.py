"""Snapshots: content-addressed tarballs of a task's code, at <data dir>/snapshots/<sha256>.tar.gz.

An upload is written to a temporary file in the same folder while it is hashed and counted,
then checked (the digest it claims, gzip, every member safe to unpack) and renamed into place
in one step, so a reader never sees a partial or unverified snapshot.

Who may use a snapshot: the bytes are shared (one file per digest), but the right to name a
digest in a task is not. Every user who uploaded the content owns it (snapshot_owners: a
second user uploading the same bytes proves they have them, and becomes an owner too); an admin
may share a digest with every user (snapshot_shares). Admins may use any snapshot; a worker may
download one only for an attempt it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, Role
from fetchml.core.errors import ForbiddenError, NotFoundError, PayloadTooLargeError, ValidationError
from fetchml.core.snapshots_models import SnapshotInfo, check_digest
from fetchml.host.archive import DEFAULT_MAX_MEMBERS, check_tarball
from fetchml.host.files import AtomicHashedWriter, HashCounter
from fetchml.services.base import read
from fetchml.services.node_assignments import nodes_of
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import SnapshotOwnerRow, SnapshotShareRow, TaskRow

GZIP_MAGIC = b"\x1f\x8b"
_FLUSH_BYTES = 1024 * 1024


def may_use_snapshot(session: Session, principal: Principal, digest: str) -> bool:
    """May `principal` name snapshot `digest` in a task (or see that it exists)?"""
    if principal.role is Role.ADMIN:
        return True
    if session.get(SnapshotShareRow, digest) is not None:
        return True
    return session.get(SnapshotOwnerRow, (digest, principal.user_id)) is not None


def check_snapshot_use(session: Session, principal: Principal, digest: str) -> None:
    """403 unless the principal uploaded `digest` or an admin shared it. One answer whether or
    not the snapshot exists, so a refusal says nothing about other users' uploads."""
    if not may_use_snapshot(session, principal, digest):
        raise ForbiddenError(
            f"Snapshot {digest} may not be used: upload it yourself, or ask an admin to share it"
        )


def _worker_holds(session: Session, worker_name: str | None, digest: str) -> bool:
    if worker_name is None:
        return False
    active = [s.value for s in ACTIVE_STATUSES]
    rows = session.scalars(
        select(TaskRow).where(col(TaskRow.snapshot_id) == digest, col(TaskRow.status).in_(active))
    ).all()
    return any(
        n.worker_id == worker_name and n.slot_assigned and n.live
        for row in rows
        for n in nodes_of(row)
    )


async def _chunks(body: bytes | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(body, bytes | bytearray | memoryview):
        yield bytes(body)
        return
    async for chunk in body:
        yield chunk


class SnapshotService:
    def __init__(
        self,
        data_dir: Path,
        max_bytes: int,
        *,
        max_members: int = DEFAULT_MAX_MEMBERS,
        max_unpacked_bytes: int | None = None,
        db: Database | None = None,
        writer: WriteQueue | None = None,
    ) -> None:
        # Without a database (unit use of the file store) no ownership is recorded or checked.
        self.db = db
        self.writer = writer
        self.root = Path(data_dir) / "snapshots"
        self.max_bytes = max_bytes
        self.max_members = max_members
        # A gzip bomb is bounded too: unpacked, a snapshot may be at most 16x its cap (>= 4 GiB).
        self.max_unpacked_bytes = max_unpacked_bytes or max(16 * max_bytes, 4 * 1024**3)

    def _file(self, digest: str) -> Path:
        return self.root / f"{digest}.tar.gz"

    async def exists(self, digest: str) -> bool:
        return await asyncio.to_thread(self._file(check_digest(digest)).is_file)

    async def path(self, digest: str) -> Path:
        file = self._file(check_digest(digest))
        if not await asyncio.to_thread(file.is_file):
            raise NotFoundError(f"Snapshot {digest} not found")
        return file

    async def check_visible(self, principal: Principal, digest: str) -> None:
        """404 for a snapshot the caller may not use, as for one that does not exist: `fetchml
        run` then uploads its own copy (and so becomes an owner) instead of naming another
        user's upload."""
        check_digest(digest)
        if self.db is None:
            return
        if principal.role is Role.WORKER:
            return  # workers may ask; what they may download is checked by check_download
        if not await read(self.db, lambda s: may_use_snapshot(s, principal, digest)):
            raise NotFoundError(f"Snapshot {digest} not found")

    async def check_download(self, principal: Principal, digest: str) -> None:
        """Admins download any snapshot; a worker only one that an attempt it holds runs."""
        check_digest(digest)
        if self.db is None or principal.role is Role.ADMIN:
            return
        if not await read(self.db, lambda s: _worker_holds(s, principal.worker_name, digest)):
            raise ForbiddenError(f"Snapshot {digest} is not used by an attempt this worker holds")

    async def record_owner(self, principal: Principal, digest: str) -> None:
        if self.writer is None:
            return

        def op(tx: Tx) -> None:
            # Under the write lock: no second writer can add the same row in between.
            if tx.session.get(SnapshotOwnerRow, (digest, principal.user_id)) is None:
                tx.session.add(
                    SnapshotOwnerRow(digest=digest, user_id=principal.user_id, created_at=tx.clock.now())
                )

        await self.writer.run(op)

    async def share(self, principal: Principal, digest: str, ip_address: str | None = None) -> None:
        """An admin lets every user name `digest` in their tasks (audited; repeating it is a no-op)."""
        check_digest(digest)
        await self.path(digest)  # 404 for a snapshot that was never uploaded
        if self.writer is None:
            return

        def op(tx: Tx) -> None:
            if tx.session.get(SnapshotShareRow, digest) is not None:
                return
            tx.session.add(
                SnapshotShareRow(digest=digest, shared_by=principal.user_id, created_at=tx.clock.now())
            )
            tx.audit(
                AuditEventType.FILE_ACCESS,
                user_id=principal.user_id,
                resource=f"snapshot:{digest}",
                action="share",
                ip_address=ip_address,
                metadata={},
            )

        await self.writer.run(op)

    async def put(self, digest: str, body: bytes | AsyncIterable[bytes]) -> SnapshotInfo:
        """Stores `body` as snapshot `digest`. Idempotent: a known digest is not rewritten (the
        body is still read and must match)."""
        check_digest(digest)
        final = self._file(digest)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        if await asyncio.to_thread(final.is_file):
            counter = HashCounter(
                limit=self.max_bytes, expected_sha256=digest, too_large=self._too_large, mismatch=_mismatch
            )
            size = await _receive(body, counter)
            counter.check()
            return SnapshotInfo(sha256=digest, size=size, existed=True)

        out = await asyncio.to_thread(
            AtomicHashedWriter,
            final,
            limit=self.max_bytes,
            expected_sha256=digest,
            too_large=self._too_large,
            mismatch=_mismatch,
            tmp_prefix=".upload-",
        )
        try:
            size = await _receive(body, out)
            await asyncio.to_thread(out.commit, self._check_tarball)
        finally:
            await asyncio.to_thread(out.discard)
        return SnapshotInfo(sha256=digest, size=size, existed=False)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"snapshot larger than the {self.max_bytes} byte limit")

    def _check_tarball(self, tmp: Path) -> None:
        with tmp.open("rb") as fh:
            if fh.read(2) != GZIP_MAGIC:
                raise ValidationError("snapshot is not a gzip-compressed tar archive")
            fh.seek(0)
            check_tarball(fh, max_members=self.max_members, max_total_bytes=self.max_unpacked_bytes)


def _mismatch(_found: str) -> ValidationError:
    return ValidationError("snapshot content does not match its sha256")


async def _receive(body: bytes | AsyncIterable[bytes], sink: HashCounter | AtomicHashedWriter) -> int:
    """Hands the body to `sink`, which counts, hashes and (a file) writes it, refusing it past the
    cap: in batches of about a MiB, each in a thread, so the event loop neither hashes nor waits
    on the disk. The digest is checked by the caller, once the whole body came."""
    pending: list[bytes] = []
    pending_bytes = 0
    async for chunk in _chunks(body):
        if not chunk:
            continue
        pending.append(chunk)
        pending_bytes += len(chunk)
        if pending_bytes >= _FLUSH_BYTES:
            await asyncio.to_thread(sink.writelines, pending)
            pending, pending_bytes = [], 0
    if pending:
        await asyncio.to_thread(sink.writelines, pending)
    return sink.size
