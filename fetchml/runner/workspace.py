"""One attempt's workspace on a worker:

- <root>/snapshot: the snapshot unpacked ($FETCH_ML_SNAPSHOT_DIR; the task starts here);
- <root>/snapshot/<mount_path, or datasets/<name>>: each dataset file (a private copy, a
  read-only bind mount, or a hard link the task's user cannot write: see `_place`);
- <root>/output: $FETCHML_OUTPUT_DIR, what the task writes there becomes its artifacts.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from fetchml.client import FetchmlClient
from fetchml.core.models import DatasetSpec, check_mount_path
from fetchml.core.snapshots_models import check_digest
from fetchml.host.archive import safe_extract, sha256_file
from fetchml.runner.datasets import copy_verified, write_stamp


class WorkspaceError(Exception):
    """The workspace could not be staged; the message says why in a user's words."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    snapshot_dir: Path
    output_dir: Path
    # Docker: (verified cache file, path relative to the snapshot folder) to mount read-only.
    readonly_mounts: tuple[tuple[Path, str], ...] = ()

    def env(self) -> dict[str, str]:
        return {
            "FETCH_ML_SNAPSHOT_DIR": str(self.snapshot_dir),
            "FETCHML_OUTPUT_DIR": str(self.output_dir),
            "FETCHML_WORKSPACE": str(self.root),
        }


def dataset_mount(spec: DatasetSpec) -> str:
    """Where a dataset appears, relative to the snapshot folder."""
    try:
        return check_mount_path(spec.mount_path or f"datasets/{spec.name}")
    except ValueError as exc:
        raise WorkspaceError(f"dataset {spec.name!r}: {exc}") from None


def _inside(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


def _place(
    spec: DatasetSpec,
    cached: Path,
    snapshot_dir: Path,
    *,
    mount: bool = False,
    owner: tuple[int, int] | None = None,
) -> tuple[Path, str] | None:
    """Put a verified cache entry at the dataset's mount path, never writable by the task:
    `mount` (docker): an empty placeholder, and (cached file, path) to bind-mount read-only
    over it; with `owner` (tasks run as another user): a hard link of the worker's 0444 file,
    which that user cannot change; otherwise a private copy (a hard link would let a task of
    the worker's own uid rewrite the cache entry for everyone after it)."""
    rel = dataset_mount(spec)
    target = snapshot_dir / rel
    # The snapshot may hold links (kept inside itself when unpacked); still, every folder on
    # the way must resolve inside the snapshot folder before anything is created in it.
    folder = snapshot_dir
    for part in Path(rel).parts[:-1]:
        folder = folder / part
        if not os.path.lexists(folder):
            folder.mkdir()
            if owner is not None:
                os.chown(folder, *owner)
        if not _inside(folder, snapshot_dir) or not folder.is_dir():
            raise WorkspaceError(f"dataset {spec.name!r}: mount_path {rel!r} leaves the workspace")
    if os.path.lexists(target):
        raise WorkspaceError(f"dataset {spec.name!r}: mount_path {rel!r} is already taken in the snapshot")
    if mount:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444))
        return cached, rel
    if owner is not None:
        try:
            os.link(cached, target)
            write_stamp(cached)  # a link changes the entry's ctime, not its content
            return None
        except OSError:  # another filesystem, or links not allowed: a copy then
            pass
    copy_verified(cached, target, spec.sha256)
    return None


def prepare_workspace(
    root: Path,
    *,
    snapshot_tarball: Path | None,
    datasets: list[tuple[DatasetSpec, Path]],
    owner: tuple[int, int] | None = None,
    mount_datasets: bool = False,
) -> Workspace:
    """Stages an attempt in `root`, which must be missing or empty (one fresh root per attempt).

    With `owner` (uid, gid: the local executor's --run-as user), the workspace, its snapshot
    and output folder become that user's (mode 0700 for the root); dataset files are placed
    after that and stay the worker's, so the task can never change a cached dataset."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise WorkspaceError(f"workspace {root} is not empty")
    ws = Workspace(root=root, snapshot_dir=root / "snapshot", output_dir=root / "output")
    if snapshot_tarball is not None:
        safe_extract(snapshot_tarball, ws.snapshot_dir)
    else:
        ws.snapshot_dir.mkdir()
    ws.output_dir.mkdir()
    if owner is not None:
        _give_to(root, owner)
    mounts = [
        _place(spec, Path(cached), ws.snapshot_dir, mount=mount_datasets, owner=owner)
        for spec, cached in datasets
    ]
    return replace(ws, readonly_mounts=tuple(m for m in mounts if m is not None))


def _give_to(root: Path, owner: tuple[int, int]) -> None:
    """chown -R without following links (the snapshot may hold some; they stay inside it)."""
    uid, gid = owner
    os.chown(root, uid, gid, follow_symlinks=False)
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


class OutputError(Exception):
    """An output cannot be collected safely (a link or something else where a file or folder
    was); the message says why in a user's words."""


OUTPUT_REPLACED = "output folder was replaced by a link; nothing collected"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a fifo must not wait for a writer (it is refused after fstat).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_DEPTH = 64  # folders nested deeper are not collected (each level holds a descriptor)


def _open_output_dir(output_dir: Path) -> int | None:
    """A descriptor of the output folder itself, never through a link; None when it is gone."""
    try:
        st = os.lstat(output_dir)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(OUTPUT_REPLACED)
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError("output folder was replaced by something that is not a folder; nothing collected")
    try:
        fd = os.open(output_dir, _DIR_FLAGS)
    except OSError as exc:  # swapped for a link (ELOOP) or a file (ENOTDIR) since the lstat
        raise OutputError(OUTPUT_REPLACED) from exc
    if not os.path.samestat(st, os.fstat(fd)):
        os.close(fd)
        raise OutputError(OUTPUT_REPLACED)
    return fd


def _walk_outputs(
    dir_fd: int, prefix: str, depth: int, found: list[tuple[str, int]], skipped: list[str]
) -> None:
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone since the listing
        if stat.S_ISREG(st.st_mode):
            found.append((rel, st.st_size))
        elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
            try:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:  # swapped for a link or a file since the listing
                skipped.append(rel + "/")
                continue
            try:
                _walk_outputs(sub, rel + "/", depth + 1, found, skipped)
            finally:
                os.close(sub)
        else:
            skipped.append(rel + ("/" if stat.S_ISDIR(st.st_mode) else ""))


def scan_outputs(output_dir: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(regular files under `output_dir` as (relative posix path, size), what was left out:
    links, fifos, devices, sockets), both sorted. Nothing is ever reached through a link: the
    folder is walked by descriptors opened with O_NOFOLLOW. OutputError when the output folder
    itself is a link or not a folder (a task, root in its container, can replace it)."""
    fd = _open_output_dir(Path(output_dir))
    if fd is None:
        return [], []
    found: list[tuple[str, int]] = []
    skipped: list[str] = []
    try:
        _walk_outputs(fd, "", 0, found, skipped)
    finally:
        os.close(fd)
    return sorted(found), sorted(skipped)


def collect_outputs(output_dir: Path) -> list[tuple[str, Path, int]]:
    """The regular files under `output_dir` as (relative posix path, absolute path, size), sorted.
    Links are never followed nor listed: a task cannot make the worker upload files outside.
    Read them with open_output, never by the path (it may have been swapped for a link since)."""
    base = Path(output_dir).absolute()
    found, _ = scan_outputs(base)
    return [(rel, base / rel, size) for rel, size in found]


def open_output(output_dir: Path, rel: str) -> BinaryIO:
    """`output_dir`/`rel` opened for reading, refusing (OutputError) anything but a regular file
    reached without a link: each folder on the way and the file are opened relative to their
    parent's descriptor with O_NOFOLLOW, so a file or folder swapped for a link (or a fifo)
    after the listing is refused rather than followed."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise OutputError(f"{rel!r} is not a plain relative path")
    dir_fd = _open_output_dir(Path(output_dir))
    if dir_fd is None:
        raise OutputError("the output folder is gone")
    try:
        for part in parts[:-1]:
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise OutputError(f"{rel}: a folder on its path is no longer a folder (a link?)") from exc
            os.close(dir_fd)
            dir_fd = sub
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):  # never open a device or fifo, even non-blocking
                raise OutputError(f"{rel} is not a regular file")
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise OutputError(f"{rel} is no longer a regular file (a link?)") from exc
    finally:
        os.close(dir_fd)
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or not os.path.samestat(st, opened):
        os.close(fd)
        raise OutputError(f"{rel} is no longer a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class SnapshotCache:
    """Snapshot tarballs on this worker: cache_dir/<sha256>.tar.gz, downloaded when missing."""

    def __init__(self, cache_dir: Path, client: FetchmlClient) -> None:
        self.cache_dir = Path(cache_dir)
        self.client = client

    def get(self, digest: str) -> Path:
        """The tarball of snapshot `digest`. A cached one is re-hashed (a snapshot is at most a few
        hundred MiB) and downloaded again if it does not match."""
        path = self.cache_dir / f"{check_digest(digest)}.tar.gz"
        if path.is_file():
            if sha256_file(path) == digest:
                return path
            path.unlink()
        self.client.snapshots.download(digest, path)  # verifies the digest, then renames
        return path
