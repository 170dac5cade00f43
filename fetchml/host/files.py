"""Files written whole or not at all, hashed on the way.

Uploads and downloads on both sides (artifacts, snapshots, datasets, packed snapshots) stream
bytes into a temporary file beside the destination while hashing (SHA-256) and counting them,
then fsync it, check the digest they expected, and rename it into place in one step. A reader
never sees a partial or unchecked file, and on any failure the temporary file is removed and the
old destination, if any, is left as it was.

Callers keep their own error types and texts: `too_large` and `mismatch` make the exception raised
when the byte limit is passed or the digest differs (defaults: FileTooLargeError,
DigestMismatchError).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType

# Makes the exception raised once more than `limit` bytes came.
TooLarge = Callable[[], Exception]
# Makes the exception raised when the digest differs, given the digest found.
Mismatch = Callable[[str], Exception]


class FileTooLargeError(ValueError):
    pass


class DigestMismatchError(ValueError):
    pass


class HashCounter:
    """The SHA-256 and size of a stream, refused past `limit` bytes (before the chunk that passes
    it is hashed) and, on `check`, unless its digest is `expected_sha256`. For a stream that is
    only checked, not kept (an upload of a file already stored)."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        expected_sha256: str | None = None,
        too_large: TooLarge | None = None,
        mismatch: Mismatch | None = None,
    ) -> None:
        self.limit = limit
        self.expected_sha256 = expected_sha256
        self._too_large = too_large
        self._mismatch = mismatch
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            if self._too_large is not None:
                raise self._too_large()
            raise FileTooLargeError(f"more than {self.limit} bytes")
        self._hash.update(chunk)
        return len(chunk)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def check(self) -> None:
        """Raises unless the digest is the expected one (no expectation: nothing to check)."""
        found = self.hexdigest()
        if self.expected_sha256 is None or found == self.expected_sha256:
            return
        if self._mismatch is not None:
            raise self._mismatch(found)
        raise DigestMismatchError(f"sha256 {found}, expected {self.expected_sha256}")


class AtomicHashedWriter:
    """Bytes written to a temporary file (in `tmp_dir`, default beside `dest`; named
    `<tmp_prefix>XXXX<tmp_suffix>`, default `.<dest name>.XXXX.part`) and hashed and counted as
    `HashCounter` does; `commit` fsyncs it, checks the digest, runs `check` on it, sets `mode`
    (default: mkstemp's 0600) and renames it to `dest`.

    Used as a context manager (or with `discard` in a `finally`): leaving without a commit, or
    after a failed one, closes and removes the temporary file. `write` blocks on the disk, so
    async callers run it (and `commit`, `discard`) in a thread."""

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        limit: int | None = None,
        expected_sha256: str | None = None,
        too_large: TooLarge | None = None,
        mismatch: Mismatch | None = None,
        tmp_dir: str | os.PathLike[str] | None = None,
        tmp_prefix: str | None = None,
        tmp_suffix: str = ".part",
        mode: int | None = None,
    ) -> None:
        self.dest = Path(dest)
        self.mode = mode
        self.counter = HashCounter(
            limit=limit, expected_sha256=expected_sha256, too_large=too_large, mismatch=mismatch
        )
        prefix = f".{self.dest.name}." if tmp_prefix is None else tmp_prefix
        folder = self.dest.parent if tmp_dir is None else Path(tmp_dir)
        fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=tmp_suffix)
        self.tmp = Path(name)
        try:
            self._fh = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        self._committed = False

    @property
    def size(self) -> int:
        return self.counter.size

    @property
    def sha256(self) -> str:
        return self.counter.hexdigest()

    def write(self, chunk: bytes) -> int:
        self.counter.write(chunk)  # refuses past the limit before anything of the chunk is kept
        self._fh.write(chunk)
        return len(chunk)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self._fh.flush()

    def commit(self, check: Callable[[Path], None] | None = None) -> Path:
        """Makes the file durable, checks its digest (then `check(temporary path)`, which may
        raise) and renames it to `dest`; returns `dest`."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self.counter.check()
        if check is not None:
            check(self.tmp)
        if self.mode is not None:
            os.chmod(self.tmp, self.mode)
        os.replace(self.tmp, self.dest)
        self._committed = True
        return self.dest

    def discard(self) -> None:
        """Closes and removes the temporary file unless it was committed; repeating it is a no-op."""
        with suppress(OSError):  # a failed flush of bytes being thrown away does not matter
            self._fh.close()
        if not self._committed:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicHashedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()
