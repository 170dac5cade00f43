"""Datasets on a worker: fetched once, checked against their SHA-256, cached by it.

A dataset's `source` is one file (a tarball, an archive, a single data file), named by a local
path, a `file://` URL or an http(s) URL. Folders are not sources: pack one into a tarball first,
so that its SHA-256 is well defined. The task gets the file as it is at its mount path; it is
not unpacked.

The cache is cache_dir/<sha256>, written through a temporary file and renamed only after the
digest matched, so the cache never holds a wrong or partial file. Cached files are read-only; a
stamp (size, mtime) beside each one lets a hit be used without hashing it again, and a file
changed since it was verified (say, through a hard link in a workspace) is hashed again, and
fetched again if it no longer matches.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import httpx

from fetchml.core.archive import sha256_file
from fetchml.core.models import DatasetSpec

_CHUNK = 1024 * 1024


class DatasetError(Exception):
    """A dataset could not be provided; the message names it and says why."""


def display_source(source: str) -> str:
    """The source as it may be shown: no credentials, no query string (tokens live there)."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL names host {parts.netloc!r}; only local files can be read")
        return Path(url2pathname(unquote(parts.path)))
    return Path(source).expanduser()


class DatasetCache:
    def __init__(self, cache_dir: Path, http: httpx.Client | None = None, *, timeout: float = 60.0) -> None:
        self.cache_dir = Path(cache_dir)
        self._http = http
        self._timeout = timeout

    def cached(self, sha256: str) -> Path:
        return self.cache_dir / sha256.lower()

    def _stamp(self, sha256: str) -> Path:
        return self.cache_dir / f".{sha256.lower()}.verified"

    def fetch(self, spec: DatasetSpec) -> Path:
        """The verified local copy of `spec`'s file, fetched only when not cached already."""
        final = self.cached(spec.sha256)
        if self._hit(spec.sha256, final):
            return final
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{spec.sha256}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in self._read(spec):
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = hasher.hexdigest()
            if got != spec.sha256:
                raise DatasetError(
                    f"dataset {spec.name!r}: sha256 mismatch (expected {spec.sha256}, got {got})"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            self._write_stamp(spec.sha256, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def _hit(self, sha256: str, final: Path) -> bool:
        try:
            st = final.stat()
        except FileNotFoundError:
            return False
        stamp = self._stamp(sha256)
        try:
            if stamp.read_text().split() == [str(st.st_size), str(st.st_mtime_ns)]:
                return True
        except (FileNotFoundError, ValueError):
            pass
        if sha256_file(final) == sha256:  # changed since verified, or verified by another version
            self._write_stamp(sha256, final)
            return True
        final.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        return False

    def _write_stamp(self, sha256: str, final: Path) -> None:
        st = final.stat()
        self._stamp(sha256).write_text(f"{st.st_size} {st.st_mtime_ns}\n")

    def _read(self, spec: DatasetSpec) -> Iterator[bytes]:
        where = display_source(spec.source)
        if spec.source.startswith(("http://", "https://")):
            yield from self._download(spec, where)
            return
        try:
            path = _local_path(spec.source)
        except ValueError as exc:
            raise DatasetError(f"dataset {spec.name!r}: {exc}") from None
        if path.is_dir():
            raise DatasetError(
                f"dataset {spec.name!r}: source {where} is a folder; sources must be files "
                "(pack a folder into a tarball and use its sha256)"
            )
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise DatasetError(f"dataset {spec.name!r}: source {where} not found") from None
        except OSError as exc:
            raise DatasetError(f"dataset {spec.name!r}: cannot read {where}: {exc.strerror}") from None

    def _download(self, spec: DatasetSpec, where: str) -> Iterator[bytes]:
        with ExitStack() as stack:
            http = self._http or stack.enter_context(
                httpx.Client(timeout=self._timeout, follow_redirects=True)
            )
            try:
                with http.stream("GET", spec.source) as resp:
                    if resp.status_code != 200:
                        raise DatasetError(
                            f"dataset {spec.name!r}: download from {where} failed: HTTP {resp.status_code}"
                        )
                    yield from resp.iter_bytes(_CHUNK)
            except httpx.HTTPError as exc:
                raise DatasetError(
                    f"dataset {spec.name!r}: download from {where} failed: {type(exc).__name__}"
                ) from None
