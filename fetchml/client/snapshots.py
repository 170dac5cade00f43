"""Snapshots: upload a packed tarball under its SHA-256, ask whether one exists, download one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx

from fetchml.client.base import (
    DomainClient,
    ServerUnreachableError,
    UnexpectedResponseError,
    _raise_for_envelope,
    parse,
)
from fetchml.core.errors import ERRORS_BY_CODE, FetchmlError, InternalError
from fetchml.core.snapshots_models import SnapshotInfo, check_digest
from fetchml.host.files import AtomicHashedWriter

_CHUNK = 1024 * 1024
_UPLOAD_PIECE = 64 * 1024  # small enough for a smooth progress bar, large enough to cost nothing
# HEAD answers carry no body: the status alone says which error it was.
_ERRORS_BY_STATUS: dict[int, type[FetchmlError]] = {cls.status: cls for cls in ERRORS_BY_CODE.values()}


def _path(digest: str) -> str:
    return f"/v1/snapshots/{check_digest(digest)}"


def _pieces(fh: BinaryIO, progress: Callable[[int], None]) -> Iterator[bytes]:
    while piece := fh.read(_UPLOAD_PIECE):
        yield piece
        progress(len(piece))  # once httpx has taken it for sending


class SnapshotsClient(DomainClient):
    def exists(self, digest: str) -> bool:
        try:
            resp = self._t.http.head(_path(digest))
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"Cannot reach fetchml server at {self._t.base_url}: {exc}") from exc
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        cls = _ERRORS_BY_STATUS.get(resp.status_code, InternalError)
        raise cls(f"HEAD {resp.request.url.path} answered HTTP {resp.status_code}")

    def upload(
        self,
        digest: str,
        path: str | os.PathLike[str],
        progress: Callable[[int], None] | None = None,
    ) -> SnapshotInfo:
        """Streams the tarball at `path` (its Content-Length known up front); 'existed' tells
        whether the server already had it. `progress` gets the size of each piece as it is sent."""
        headers = {"Content-Type": "application/gzip"}
        with open(path, "rb") as fh:
            content: BinaryIO | Iterator[bytes] = fh
            if progress is not None:
                # Pieces instead of the file: the length is then stated, not found by httpx.
                headers["Content-Length"] = str(os.fstat(fh.fileno()).st_size)
                content = _pieces(fh, progress)
            resp = self._t.request("PUT", _path(digest), content=content, headers=headers)
        return parse(resp, SnapshotInfo)

    def download(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Streams snapshot `digest` to `dest` through a temporary file beside it, renamed into
        place only once its SHA-256 matches."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with AtomicHashedWriter(
            target,
            expected_sha256=digest,
            mismatch=lambda found: UnexpectedResponseError(
                f"snapshot {digest} downloaded with sha256 {found}: corrupted in transit"
            ),
        ) as out:
            try:
                with self._t.http.stream("GET", _path(digest)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for_envelope(resp)
                    for chunk in resp.iter_bytes(_CHUNK):
                        out.write(chunk)
            except httpx.TransportError as exc:
                raise ServerUnreachableError(
                    f"Cannot reach fetchml server at {self._t.base_url}: {exc}"
                ) from exc
            out.commit()
        return target
