"""Tarballs from elsewhere: checked before anything is stored or unpacked.

A snapshot is uploaded by a user and unpacked on a worker, so a tarball is hostile until
proven otherwise. `check_tarball` refuses, naming the member at fault:

- absolute names (`/etc/x`, `C:...`) and any `..` component;
- symbolic links whose target is absolute or, resolved through the archive's other links,
  leaves the tree (`l -> .` plus `s -> l/..` escapes although each looks harmless);
- hard links to anything but a regular file already in the archive;
- members beneath a symbolic link of the archive (writing through a link);
- devices, FIFOs and any other special member; duplicate names;
- bombs: more than `max_members` members or more than `max_total_bytes` unpacked.

`safe_extract` checks and unpacks from the same parsed headers, with tarfile's `data` filter
on top where this Python has it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from fetchml.core.errors import ValidationError

DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_TOTAL_BYTES = 4 * 1024**3
_MAX_LINK_HOPS = 40
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")

TarSource = str | os.PathLike[str] | BinaryIO | IO[bytes]


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _refuse(member: str, why: str) -> ValidationError:
    return ValidationError(f"unsafe archive member {member!r}: {why}")


def _normalise(name: str) -> str:
    """The member's path inside the tree ('' for the root), or a refusal naming it."""
    if not name:
        raise _refuse(name, "empty name")
    if "\x00" in name:
        raise _refuse(name, "NUL in name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise _refuse(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "'..' component")
    return "/".join(parts)


def _escapes(start: list[str], target: str, links: dict[str, str]) -> bool:
    """Does `target`, followed from directory `start` through the archive's links, leave the tree?"""
    parts = list(start)
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return True
            parts.pop()
            continue
        parts.append(part)
        link = links.get("/".join(parts))
        if link is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or link.startswith("/") or _DRIVE.match(link):
                return True
            parts.pop()
            pending.extendleft(reversed(link.split("/")))
    return False


class _Checker:
    def __init__(self, max_members: int, max_total_bytes: int) -> None:
        self.max_members = max_members
        self.max_total_bytes = max_total_bytes
        self.count = 0
        self.total = 0
        self.seen: dict[str, tarfile.TarInfo] = {}
        self.symlinks: dict[str, str] = {}
        self.members: list[tarfile.TarInfo] = []

    def add(self, m: tarfile.TarInfo) -> None:
        self.count += 1
        if self.count > self.max_members:
            raise _refuse(m.name, f"archive has more than {self.max_members} members")
        norm = _normalise(m.name)
        if m.isreg():
            self.total += m.size
            if self.total > self.max_total_bytes:
                raise _refuse(m.name, f"archive unpacks to more than {self.max_total_bytes} bytes")
        elif m.issym():
            if not m.linkname or m.linkname.startswith(("/", "\\")) or _DRIVE.match(m.linkname):
                raise _refuse(m.name, f"symbolic link to absolute path {m.linkname!r}")
            if norm == "":
                raise _refuse(m.name, "the root may not be a link")
            self.symlinks[norm] = m.linkname
        elif m.islnk():
            target = _normalise_link(m)
            if target not in self.seen or not self.seen[target].isreg():
                raise _refuse(m.name, f"hard link to {m.linkname!r}, which is not an earlier regular file")
        elif not m.isdir():
            raise _refuse(m.name, _kind(m))
        if norm in self.seen and not (m.isdir() and self.seen[norm].isdir()):
            raise _refuse(m.name, "duplicate member")
        self.seen[norm] = m
        self.members.append(m)

    def finish(self) -> None:
        """Checks that need every link of the archive."""
        for m in self.members:
            norm = _normalise(m.name)
            parts = norm.split("/") if norm else []
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in self.symlinks:
                    raise _refuse(m.name, f"lies beneath the symbolic link {parent!r}")
            if m.issym() and _escapes(parts[:-1], m.linkname, self.symlinks):
                raise _refuse(m.name, f"symbolic link target {m.linkname!r} resolves outside the tree")


def _normalise_link(m: tarfile.TarInfo) -> str:
    if not m.linkname or m.linkname.startswith(("/", "\\")) or _DRIVE.match(m.linkname):
        raise _refuse(m.name, f"hard link to absolute path {m.linkname!r}")
    parts = [p for p in m.linkname.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(m.name, f"hard link target {m.linkname!r} leaves the tree")
    return "/".join(parts)


def _kind(m: tarfile.TarInfo) -> str:
    if m.ischr() or m.isblk():
        return "device node"
    if m.isfifo():
        return "FIFO"
    return f"unsupported member type {m.type!r}"


def _tar_open(source: TarSource) -> tarfile.TarFile:
    if isinstance(source, str | os.PathLike):
        return tarfile.open(name=os.fspath(source), mode="r:*")
    if source.seekable():
        return tarfile.open(fileobj=source, mode="r:*")
    return tarfile.open(fileobj=source, mode="r|*")  # a stream: one pass, no seeking


@contextmanager
def _open(source: TarSource) -> Iterator[tarfile.TarFile]:
    try:
        tar = _tar_open(source)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValidationError(f"not a readable tar archive: {_reason(exc)}") from None
    with tar:
        yield tar


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _scan(tar: tarfile.TarFile, max_members: int, max_total_bytes: int) -> list[tarfile.TarInfo]:
    checker = _Checker(max_members, max_total_bytes)
    try:
        for member in tar:
            checker.add(member)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValidationError(f"not a readable tar archive: {_reason(exc)}") from None
    checker.finish()
    return checker.members


def check_tarball(
    source: TarSource,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[str]:
    """The member names of a safe tarball (any compression tarfile reads); ValidationError otherwise."""
    with _open(source) as tar:
        return [m.name for m in _scan(tar, max_members, max_total_bytes)]


def safe_extract(
    tarball: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[str]:
    """Checks `tarball` and unpacks it into `dest` (created if missing); returns the member names.

    The headers are parsed once: what is unpacked is exactly what was checked.
    """
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    with _open(tarball) as tar:
        members = _scan(tar, max_members, max_total_bytes)
        for m in members:
            # Never setuid/setgid/sticky, never world-writable; owner keeps read/write.
            m.mode = (m.mode & 0o755) | (0o600 if not m.isdir() else 0o700)
            m.uid = m.gid = 0
            m.uname = m.gname = ""
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4 has no filters; our checks stand alone
                tar.extractall(target, members=members)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ValidationError(f"archive could not be unpacked safely: {_reason(exc)}") from None
    return [m.name for m in members]
