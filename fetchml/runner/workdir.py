"""The worker's work dir: its caches kept private, and where attempt workspaces go."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("fetchml.runner")


def _reachable_by_others(path: Path) -> bool:
    """Whether any user may traverse every folder down to `path` (o+x all the way)."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents))


def prepare_work_dir(work_dir: Path, name: str, task_owner: tuple[int, int] | None) -> Path:
    """Create the work dir, readable by the worker's user only, and return where attempt
    workspaces go.

    Tasks run as the worker's user: in work_dir/workspaces. Tasks run as another user
    (task_owner): they must reach their own workspace, and nothing else. When every folder down
    to work_dir is traversable by others, work_dir becomes 0711 (entered, never listed), its
    caches stay 0700 and work_dir/workspaces is 0711; otherwise (a work dir under /root or the
    0700 data dir) workspaces go to a fresh 0711 folder in the temp dir ($TMPDIR).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    if work_dir.stat().st_mode & stat.S_ISVTX:  # /tmp and the like: shared, never ours to close
        raise ValueError(f"work dir {work_dir} is a shared folder (sticky bit): name a folder of its own")
    os.chmod(work_dir, 0o700)
    for cache in ("snapshots", "datasets"):
        (work_dir / cache).mkdir(mode=0o700, exist_ok=True)
        os.chmod(work_dir / cache, 0o700)
    if task_owner is None:
        return work_dir / "workspaces"
    if _reachable_by_others(work_dir.parent):
        os.chmod(work_dir, 0o711)
        workspaces = work_dir / "workspaces"
        workspaces.mkdir(exist_ok=True)
    else:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
        workspaces = Path(tempfile.mkdtemp(prefix=f"fetchml-{safe}-workspaces-"))
        log.info(
            "tasks run as another user: workspaces in %s (%s is not reachable by it)", workspaces, work_dir
        )
    os.chmod(workspaces, 0o711)
    return workspaces
