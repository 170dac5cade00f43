"""Snapshots: content-addressed tarballs of a task's code, at <data dir>/snapshots/<sha256>.tar.gz.

An upload is written to a temporary file in the same folder while it is hashed and counted,
then checked (the digest it claims, gzip, every member safe to unpack) and renamed into place
in one step, so a reader never sees a partial or unverified snapshot.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO

from fetchml.core.archive import DEFAULT_MAX_MEMBERS, check_tarball
from fetchml.core.errors import NotFoundError, PayloadTooLargeError, ValidationError
from fetchml.core.snapshots_models import SnapshotInfo, check_digest

GZIP_MAGIC = b"\x1f\x8b"
_FLUSH_BYTES = 1024 * 1024


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
    ) -> None:
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

    async def put(self, digest: str, body: bytes | AsyncIterable[bytes]) -> SnapshotInfo:
        """Stores `body` as snapshot `digest`. Idempotent: a known digest is not rewritten (the
        body is still read and must match)."""
        check_digest(digest)
        final = self._file(digest)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        if await asyncio.to_thread(final.is_file):
            size = await self._receive(digest, body, None)
            return SnapshotInfo(sha256=digest, size=size, existed=True)

        fd, tmp_name = await asyncio.to_thread(
            tempfile.mkstemp, dir=self.root, prefix=".upload-", suffix=".part"
        )
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                size = await self._receive(digest, body, fh)
                await asyncio.to_thread(_sync, fh)
            await asyncio.to_thread(self._check_and_place, tmp, final)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        return SnapshotInfo(sha256=digest, size=size, existed=False)

    async def _receive(self, digest: str, body: bytes | AsyncIterable[bytes], fh: BinaryIO | None) -> int:
        """Hashes, counts and (with `fh`) writes the body; refuses it past the cap or on a mismatch."""
        hasher = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in _chunks(body):
            if not chunk:
                continue
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLargeError(f"snapshot larger than the {self.max_bytes} byte limit")
            hasher.update(chunk)
            if fh is not None:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= _FLUSH_BYTES:
                    await asyncio.to_thread(fh.writelines, pending)
                    pending, pending_bytes = [], 0
        if fh is not None and pending:
            await asyncio.to_thread(fh.writelines, pending)
        if hasher.hexdigest() != digest:
            raise ValidationError("snapshot content does not match its sha256")
        return size

    def _check_and_place(self, tmp: Path, final: Path) -> None:
        with tmp.open("rb") as fh:
            if fh.read(2) != GZIP_MAGIC:
                raise ValidationError("snapshot is not a gzip-compressed tar archive")
            fh.seek(0)
            check_tarball(fh, max_members=self.max_members, max_total_bytes=self.max_unpacked_bytes)
        os.replace(tmp, final)


def _sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
