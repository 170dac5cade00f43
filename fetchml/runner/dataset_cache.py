"""The dataset cache: cache_dir/<sha256 of the vetted source>/<sha256>, written through a
temporary file and renamed only once the digest matched, each entry with a stamp that lets a hit
skip hashing (see fetchml.runner.datasets for why it is safe)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

from fetchml.core.models import DatasetSpec
from fetchml.host.archive import sha256_file
from fetchml.host.files import AtomicHashedWriter
from fetchml.runner.dataset_policy import CHUNK, DatasetCancelled, DatasetError, DatasetPolicy
from fetchml.runner.dataset_progress import FetchReport, Say
from fetchml.runner.dataset_reading import ReadMixin


def _stamp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.verified"


def _stamp_of(st: os.stat_result) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def write_stamp(final: Path) -> None:
    """Record `final` as verified as it is now. Also for whoever just hard-linked it, which
    changes its ctime (and so would make the next use hash it again)."""
    _stamp_path(final).write_text(_stamp_of(final.stat()) + "\n")


def copy_verified(src: Path, dst: Path, sha256: str) -> None:
    """Copy `src` to a new file `dst` (mode 0444), hashing on the way: a cache entry changed
    between its check and this copy never reaches a task."""
    hasher = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with open(src, "rb") as inp, os.fdopen(fd, "wb", closefd=False) as out:
            while chunk := inp.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)
    if hasher.hexdigest() != sha256:
        dst.unlink(missing_ok=True)
        raise DatasetError(f"cached dataset {src.name} changed while it was being copied; try again")


class DatasetCache(ReadMixin):
    """Vetting (dataset_sources) and reading (dataset_reading) are its mixins."""

    def __init__(self, cache_dir: Path, policy: DatasetPolicy | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.policy = policy or DatasetPolicy()
        self._roots = [os.path.realpath(Path(r).expanduser()) for r in self.policy.roots]

    def fetch(self, spec: DatasetSpec, cancel: threading.Event | None = None, say: Say | None = None) -> Path:
        """The verified local copy of `spec`'s file, fetched only when not cached already.
        `say` gets its progress lines for the task's log (fetchml.runner.dataset_progress).
        Raises DatasetError (DatasetCancelled once `cancel` is set)."""
        report = FetchReport(spec.name, say)
        try:
            return self._fetch(spec, cancel, report)
        except DatasetCancelled:
            raise
        except DatasetError as exc:
            report.failed(str(exc))
            raise type(exc)(f"dataset {spec.name!r}: {exc}") from None

    def _fetch(self, spec: DatasetSpec, cancel: threading.Event | None, report: FetchReport) -> Path:
        src = self._vet(spec.source)
        folder = self.cache_dir / hashlib.sha256(src.key.encode()).hexdigest()
        final = folder / spec.sha256
        if self._hit(spec.sha256, final):
            report.hit(final.stat().st_size)
            return final
        report.fetching(src.where)
        for d in (self.cache_dir, folder):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # tasks never see the cache folders, not even their names
        limit = self.policy.max_bytes
        with AtomicHashedWriter(
            final,
            limit=limit,
            expected_sha256=spec.sha256,
            too_large=lambda: DatasetError(
                f"{src.where} is larger than this worker's limit of {limit} bytes"
            ),
            mismatch=lambda _: DatasetError(f"the file at {src.where} does not match the expected sha256"),
            mode=0o444,
        ) as out:
            for chunk in self._read(src, cancel, report):
                if cancel is not None and cancel.is_set():
                    raise DatasetCancelled()
                out.write(chunk)
                report.advance(len(chunk))
            out.commit()
        write_stamp(final)
        report.verified()
        return final

    def _hit(self, sha256: str, final: Path) -> bool:
        try:
            st = final.stat()
        except FileNotFoundError:
            return False
        stamp = _stamp_path(final)
        try:
            if stamp.read_text().strip() == _stamp_of(st) and stat.S_IMODE(st.st_mode) & 0o222 == 0:
                return True
        except (FileNotFoundError, ValueError):
            pass
        if sha256_file(final) == sha256:  # touched since verified (a link, a chmod): still right
            os.chmod(final, 0o444)
            write_stamp(final)
            return True
        final.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        return False
