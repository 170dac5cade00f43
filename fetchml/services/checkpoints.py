"""Signed audit checkpoints: the server's Ed25519 key, periodic checkpoints, and the fast
(parallel) verification of the chain and its checkpoints.

Keys. Each server signs with the key in its own data dir (`audit-signing-key.pem`, 0600,
created on first start; FETCHML_AUDIT_SIGNING_KEY points elsewhere, e.g. one key file copied to
every server of a cluster). Every checkpoint carries its key_id. A server trusts, for
verification: its own key, the public (or private) PEM keys in `<data_dir>/audit-trusted-keys/`
(old keys after a rotation, other servers' keys), and the public keys that servers sharing the
database registered in `server_meta` at start. The last are only as trustworthy as the database:
verify exports offline against public keys kept elsewhere to be independent of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.audit import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditCheckpointList,
    AuditPublicKey,
    ChainCheck,
    RangeCheck,
    checkpoint_signature_ok,
    key_id_of,
    load_public_keys,
    public_key_pem,
    sign_checkpoint,
    stitch,
)
from fetchml.core.errors import InternalError, ServiceUnavailableError
from fetchml.services.base import read
from fetchml.services.write_queue import Tx, WriteQueue, storage_error
from fetchml.store.auditscan import checkpoint_rows, scan_range
from fetchml.store.db import Database
from fetchml.store.tables import AuditCheckpointRow, AuditEventRow, ServerMetaRow

log = logging.getLogger("fetchml.audit")

KEY_FILE = "audit-signing-key.pem"
TRUSTED_DIR = "audit-trusted-keys"
META_PREFIX = "audit-key:"
SEQ = col(AuditEventRow.sequence_num)
CP_SEQ = col(AuditCheckpointRow.sequence_num)
# Chains longer than this are verified by worker processes, one range of sequence numbers each.
PARALLEL_MIN_EVENTS = 200_000


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path`, created (0600, never overwritten) when there is none."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a private key readable by others is tightened, like the data dir
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key") from None
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    log.info("created audit signing key %s (key_id %s)", path, key_id_of(key.public_key()))
    return key


def _local_trusted(data_dir: Path) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    folder = data_dir / TRUSTED_DIR
    if folder.is_dir():
        for pem in sorted(folder.glob("*.pem")):
            try:
                for k in load_public_keys(pem.read_bytes()):
                    keys[key_id_of(k)] = k
            except ValueError as exc:
                log.warning("ignoring %s: %s", pem, exc)
    return keys


def _raw_fault(exc: Exception) -> Exception:
    """A raw driver error from the fast readers, as the domain error the ORM path would give
    (503 busy/unavailable, 507 full), so a verify during an outage is never a 500."""
    if type(exc).__module__.split(".")[0] not in ("sqlite3", "psycopg"):
        return exc
    from sqlalchemy.exc import OperationalError

    return storage_error(OperationalError("audit scan", None, exc)) or exc


def _worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class CheckpointVerdict:
    def __init__(self) -> None:
        self.checked = 0
        self.latest: int | None = None
        self.bad: int | None = None
        self.first_tampered: int | None = None
        self.reason: str | None = None


class CheckpointService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        *,
        data_dir: Path,
        key_path: Path | None = None,
        every_events: int = 1000,
        every_seconds: float = 60.0,
        parallel_min_events: int = PARALLEL_MIN_EVENTS,
    ) -> None:
        self.db = db
        self.writer = writer
        self.data_dir = data_dir
        self.key = load_or_create_key(key_path or data_dir / KEY_FILE)
        self.key_id = key_id_of(self.key.public_key())
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.parallel_min_events = parallel_min_events
        self._started = writer.clock.now()

    # --- keys ------------------------------------------------------------------------------

    def public_key(self) -> AuditPublicKey:
        return AuditPublicKey(key_id=self.key_id, public_key_pem=public_key_pem(self.key.public_key()))

    def _known_keys(self, session: Session) -> dict[str, Ed25519PublicKey]:
        keys: dict[str, Ed25519PublicKey] = {}
        for row in session.scalars(
            select(ServerMetaRow).where(col(ServerMetaRow.key).startswith(META_PREFIX))
        ):
            try:
                for k in load_public_keys(row.value.encode()):
                    if key_id_of(k) == row.key.removeprefix(META_PREFIX):
                        keys[key_id_of(k)] = k
            except ValueError:
                continue  # an unreadable registration trusts nothing
        keys.update(_local_trusted(self.data_dir))
        keys[self.key_id] = self.key.public_key()
        return keys

    async def register_key(self) -> None:
        """Publish this server's public key so the other servers on the database know it."""
        name, pem = META_PREFIX + self.key_id, public_key_pem(self.key.public_key())

        def op(tx: Tx) -> None:
            if tx.session.get(ServerMetaRow, name) is None:
                tx.session.add(ServerMetaRow(key=name, value=pem))

        await self.writer.run(op)

    # --- checkpoints -------------------------------------------------------------------------

    def _due(self, head: int, last: tuple[int, datetime] | None) -> bool:
        if head <= (last[0] if last else 0):
            return False  # nothing new (or the chain is shorter than its checkpoint: never sign that)
        since = last[1] if last else self._started
        return head - (last[0] if last else 0) >= self.every_events or (
            (self.writer.clock.now() - since).total_seconds() >= self.every_seconds
        )

    @staticmethod
    def _state(session: Session) -> tuple[tuple[int, str] | None, tuple[int, datetime] | None]:
        head = session.execute(
            select(SEQ, col(AuditEventRow.event_hash)).order_by(SEQ.desc()).limit(1)
        ).first()
        last = session.execute(
            select(CP_SEQ, col(AuditCheckpointRow.created_at)).order_by(CP_SEQ.desc()).limit(1)
        ).first()
        return (
            (int(head[0]), str(head[1])) if head else None,
            (int(last[0]), last[1]) if last else None,
        )

    async def maybe_checkpoint(self) -> AuditCheckpoint | None:
        """Sign a checkpoint of the chain head when N events or T seconds have passed since the
        last one. Cheap to call often: the write happens only when one is due."""
        head, last = await read(self.db, self._state)
        if head is None or not self._due(head[0], last):
            return None

        def op(tx: Tx) -> AuditCheckpoint | None:
            # Inside the write lock, after this batch's earlier appends: (seq, root) is the head.
            head, last = self._state(tx.session)
            if head is None or not self._due(head[0], last):
                return None
            now = tx.clock.now()
            sig = sign_checkpoint(self.key, head[0], head[1], now)
            tx.session.add(
                AuditCheckpointRow(
                    sequence_num=head[0], root=head[1], created_at=now, key_id=self.key_id, signature=sig
                )
            )
            return AuditCheckpoint(
                sequence_num=head[0], root=head[1], created_at=now, key_id=self.key_id, signature=sig
            )

        return await self.writer.run(op)

    async def run(self, stop: asyncio.Event) -> None:
        """Checkpoint when due, until `stop`. A failure (the database away or full) is logged
        once and retried every tick; so is publishing the public key."""
        tick = max(0.05, min(1.0, self.every_seconds / 2))
        registered = False
        failing: str | None = None
        while True:
            try:
                if not registered:
                    await self.register_key()
                    registered = True
                await self.maybe_checkpoint()
                if failing is not None:
                    log.info("audit checkpoints resumed")
                failing = None
            except Exception as exc:
                if failing is None:
                    log.warning("audit checkpoint failed, retrying every %.2gs: %s", tick, exc)
                failing = str(exc)
            try:
                await asyncio.wait_for(stop.wait(), tick)
                return
            except TimeoutError:
                pass

    async def list(self, *, after: int | None, offset: int, limit: int) -> AuditCheckpointList:
        def q(session: Session) -> AuditCheckpointList:
            conds = [after < CP_SEQ] if after is not None else []
            total = session.scalar(select(func.count()).select_from(AuditCheckpointRow)) or 0
            rows = session.scalars(
                select(AuditCheckpointRow).where(*conds).order_by(CP_SEQ).offset(offset).limit(limit)
            ).all()
            return AuditCheckpointList(
                checkpoints=[
                    AuditCheckpoint(
                        sequence_num=r.sequence_num,
                        root=r.root,
                        created_at=r.created_at,
                        key_id=r.key_id,
                        signature=r.signature,
                    )
                    for r in rows
                ],
                total=total,
                limit=limit,
            )

        return await read(self.db, q)

    # --- verification ------------------------------------------------------------------------

    async def verify_chain(self) -> ChainCheck:
        """The hash chain, as core.audit.verify_chain would judge it, read with raw cursors and
        checked in parallel processes when it is long."""

        def bounds(session: Session) -> tuple[int, int, int]:
            # min and max are two index lookups; count(*) would read the whole table (a tenth of
            # a second at a million events) only to size the ranges: the scan counts anyway.
            lo, hi = session.execute(select(func.min(SEQ), func.max(SEQ))).one()
            if hi is None:
                return 0, 0, 0
            return int(lo), int(hi), int(hi) - int(lo) + 1

        lo, hi, n = await read(self.db, bounds)
        if n == 0:
            return ChainCheck(True, 0, None, GENESIS_HASH, None)
        try:
            return await self._scan(lo, hi, n)
        except Exception as exc:
            raise _raw_fault(exc) from exc

    async def _scan(self, lo: int, hi: int, n: int) -> ChainCheck:
        workers = _worker_count()
        if n < self.parallel_min_events or workers == 1:
            return stitch([await asyncio.to_thread(scan_range, self.db.url, lo, hi)])
        # One range per CPU: a child's start costs more than uneven ranges would. This process
        # checks the first range itself (in a thread) instead of idling while the children work.
        step = -(-(hi - lo + 1) // workers)
        spans = [(a, min(hi, a + step - 1)) for a in range(lo, hi + 1, step)]
        limit = asyncio.Semaphore(workers)
        # Plain child processes, not multiprocessing: its spawn start method would re-run
        # `python -m fetchml` (the server's own command line) in every child. gather starts its
        # tasks in order: the children are spawned before the busy thread begins.
        *rest, own = await asyncio.gather(
            *(self._scan_in_child(a, b, limit) for a, b in spans[1:]),
            asyncio.to_thread(scan_range, self.db.url, *spans[0]),
        )
        return stitch([own, *rest])

    async def _scan_in_child(self, lo: int, hi: int, limit: asyncio.Semaphore) -> RangeCheck:
        import json
        import sys

        async with limit:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fetchml.store.auditscan",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate(json.dumps({"url": self.db.url, "lo": lo, "hi": hi}).encode())
        if proc.returncode != 0:
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            log.error("audit range %d..%d: verifier exited %s: %s", lo, hi, proc.returncode, last)
            if "OperationalError" in last:
                raise ServiceUnavailableError("The database is unavailable; retry shortly", retry_after=2)
            raise InternalError()
        return RangeCheck(**json.loads(out))

    async def verify_checkpoints(self) -> CheckpointVerdict:
        """Every checkpoint: a known key, a good signature, its root equal to the stored event
        hash at its sequence number, and no checkpoint beyond the end of the chain."""

        def walk(session: Session) -> CheckpointVerdict:
            keys = self._known_keys(session)
            last_seq = session.scalar(select(func.max(SEQ))) or 0
            v = CheckpointVerdict()
            for seq, root, created, key_id, sig, stored in checkpoint_rows(self.db.url):
                v.latest = seq
                if v.bad is not None:
                    continue
                name = f"checkpoint at seq {seq}"
                key = keys.get(key_id)
                problem: str | None = None
                first = seq
                if key is None:
                    problem = f"{name}: signed by unknown key {key_id}"
                elif not checkpoint_signature_ok(key, seq, root, created, sig):
                    problem = f"{name}: signature does not verify with key {key_id}"
                elif stored is None and seq > last_seq:
                    problem = (
                        f"truncated tail: {name} covers events up to {seq}, the chain ends at {last_seq}"
                    )
                    first = last_seq + 1
                elif stored is None:
                    problem = f"{name}: event {seq} is missing"
                elif stored != root:
                    problem = f"{name}: signed root differs from event {seq}'s hash"
                if problem is not None:
                    v.bad, v.first_tampered, v.reason = seq, first, problem
                else:
                    v.checked += 1
            return v

        try:
            return await read(self.db, walk)
        except Exception as exc:
            raise _raw_fault(exc) from exc
