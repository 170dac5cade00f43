"""One attempt's workspace on a worker:

- <root>/snapshot: the snapshot unpacked ($FETCH_ML_SNAPSHOT_DIR; the task starts here);
- <root>/snapshot/<mount_path, or datasets/<name>>: each dataset file (hard link or copy);
- <root>/output: $FETCHML_OUTPUT_DIR, what the task writes there becomes its artifacts.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from fetchml.client import FetchmlClient
from fetchml.core.archive import safe_extract, sha256_file
from fetchml.core.models import DatasetSpec, check_mount_path
from fetchml.core.snapshots_models import check_digest


class WorkspaceError(Exception):
    """The workspace could not be staged; the message says why in a user's words."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    snapshot_dir: Path
    output_dir: Path

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


def _place(spec: DatasetSpec, cached: Path, snapshot_dir: Path) -> None:
    mount = dataset_mount(spec)
    target = snapshot_dir / mount
    # The snapshot may hold links (kept inside itself when unpacked); still, every folder on
    # the way must resolve inside the snapshot folder before anything is created in it.
    folder = snapshot_dir
    for part in Path(mount).parts[:-1]:
        folder = folder / part
        if not os.path.lexists(folder):
            folder.mkdir()
        if not _inside(folder, snapshot_dir) or not folder.is_dir():
            raise WorkspaceError(f"dataset {spec.name!r}: mount_path {mount!r} leaves the workspace")
    if os.path.lexists(target):
        raise WorkspaceError(f"dataset {spec.name!r}: mount_path {mount!r} is already taken in the snapshot")
    try:
        os.link(cached, target)
    except OSError:  # another filesystem, or links not allowed: a copy then
        shutil.copyfile(cached, target)


def prepare_workspace(
    root: Path,
    *,
    snapshot_tarball: Path | None,
    datasets: list[tuple[DatasetSpec, Path]],
) -> Workspace:
    """Stages an attempt in `root`, which must be missing or empty (one fresh root per attempt)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise WorkspaceError(f"workspace {root} is not empty")
    ws = Workspace(root=root, snapshot_dir=root / "snapshot", output_dir=root / "output")
    if snapshot_tarball is not None:
        safe_extract(snapshot_tarball, ws.snapshot_dir)
    else:
        ws.snapshot_dir.mkdir()
    for spec, cached in datasets:
        _place(spec, Path(cached), ws.snapshot_dir)
    ws.output_dir.mkdir()
    return ws


def collect_outputs(output_dir: Path) -> list[tuple[str, Path, int]]:
    """The regular files under `output_dir` as (relative posix path, absolute path, size), sorted.
    Links are never followed nor listed: a task cannot make the worker upload files outside."""
    found: list[tuple[str, Path, int]] = []
    base = Path(output_dir)
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found.append((path.relative_to(base).as_posix(), path.absolute(), st.st_size))
    return sorted(found)


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
