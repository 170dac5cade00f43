"""Pack a project folder into a deterministic tar.gz: the same tree always gives the same SHA-256.

What goes in: every file and folder under `root` except

- `.git/`, `.venv/` and `__pycache__/` anywhere, `fetchml-runs/` at the top (where `fetchml run`
  brings artifacts back: outputs of earlier runs are not code), and the output tarball itself;
- what `.gitignore` and `.fetchmlignore` files exclude, with git's rules: patterns are relative
  to the folder holding the file, deeper files override shallower ones, `.fetchmlignore` overrides
  `.gitignore` of the same folder (so `!pattern` there can take back a .gitignore exclusion), and
  nothing inside an excluded folder can be re-included;
- symbolic links that resolve outside `root`, and sockets, FIFOs and devices: skipped, each with a
  warning in `PackResult.skipped`. Links that stay inside are kept as (relative) links, never
  followed.

Determinism: entries sorted by name, mtime 0, uid/gid 0, no user or group names, modes reduced
to 0644/0755, gzip header without name or time. (The compressed bytes are those of this
machine's zlib; another zlib build may compress the same tree to other bytes.)
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from fetchml.host.files import AtomicHashedWriter

ALWAYS_EXCLUDED = frozenset({".git", ".venv", "__pycache__"})
RUNS_FOLDER = "fetchml-runs"  # `fetchml run`'s default artifact folder, left out at the top
IGNORE_FILES = (".gitignore", ".fetchmlignore")
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PackResult:
    sha256: str
    size: int  # of the tar.gz
    file_count: int  # regular files and links packed (folders not counted)
    skipped: list[str] = field(default_factory=list)  # warnings: what was left out, and why


@dataclass(frozen=True)
class _Rules:
    base: str  # folder of the ignore files, relative to root ("" for root)
    spec: pathspec.GitIgnoreSpec


def _load_rules(folder: Path, rel: str) -> _Rules | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        file = folder / name
        if file.is_file() and not file.is_symlink():
            lines.extend(file.read_text(encoding="utf-8", errors="replace").splitlines())
    if not lines:
        return None
    return _Rules(rel, pathspec.GitIgnoreSpec.from_lines(lines))


def _ignored(rel: str, is_dir: bool, rules: list[_Rules]) -> bool:
    """Deepest ignore file with an opinion wins; within one file, the last matching pattern."""
    for r in reversed(rules):
        local = rel[len(r.base) + 1 :] if r.base else rel
        verdict = r.spec.check_file(local + "/" if is_dir else local).include
        if verdict is not None:
            return verdict
    return False


# Called after each file packed, with the files and bytes packed so far.
PackProgress = Callable[[int, int], None]


class _Packer:
    def __init__(
        self,
        root: Path,
        exclude: set[str],
        max_bytes: int,
        tar: tarfile.TarFile,
        progress: PackProgress | None = None,
    ) -> None:
        self.root = root
        self.progress = progress
        self.real_root = os.path.realpath(root)
        self.exclude = exclude
        self.max_bytes = max_bytes
        self.tar = tar
        self.total = 0
        self.count = 0
        self.skipped: list[str] = []

    def _info(self, rel: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(rel)
        info.type = kind
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def walk(self, folder: Path, rel: str, rules: list[_Rules]) -> None:
        own = _load_rules(folder, rel)
        if own is not None:
            rules = [*rules, own]
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name in ALWAYS_EXCLUDED or os.path.abspath(entry.path) in self.exclude:
                continue
            if child_rel == RUNS_FOLDER:
                continue
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if _ignored(child_rel, is_dir, rules):
                continue
            if stat.S_ISLNK(st.st_mode):
                self._link(Path(entry.path), child_rel)
            elif is_dir:
                self.tar.addfile(self._info(child_rel, tarfile.DIRTYPE, 0o755))
                self.walk(Path(entry.path), child_rel, rules)
            elif stat.S_ISREG(st.st_mode):
                self._file(Path(entry.path), child_rel, st)
            else:
                self.skipped.append(f"{child_rel}: not a regular file, folder or link; skipped")

    def _file(self, path: Path, rel: str, st: os.stat_result) -> None:
        self.total += st.st_size
        if self.total > self.max_bytes:
            raise ValueError(
                f"{self.root} holds more than {self.max_bytes} bytes to snapshot (reached at {rel}); "
                "exclude data, checkpoints and outputs with .fetchmlignore or .gitignore"
            )
        info = self._info(rel, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
        info.size = st.st_size
        with path.open("rb") as fh:
            self.tar.addfile(info, fh)
        self.count += 1
        if self.progress is not None:
            self.progress(self.count, self.total)

    def _link(self, path: Path, rel: str) -> None:
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if os.path.commonpath([self.real_root, resolved]) != self.real_root:
            self.skipped.append(f"{rel}: symbolic link to {target!r} points outside the folder; skipped")
            return
        here = os.path.join(self.real_root, os.path.dirname(rel))
        if os.path.isabs(target) or _lexically_escapes(rel, target):
            target = os.path.relpath(resolved, here)  # same place, said relatively
        info = self._info(rel, tarfile.SYMTYPE, 0o777)
        info.linkname = target.replace(os.sep, "/")
        self.tar.addfile(info)
        self.count += 1


def _lexically_escapes(rel: str, target: str) -> bool:
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return joined == ".." or joined.startswith(".." + os.sep)


def pack_directory(
    root: Path, out: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, progress: PackProgress | None = None
) -> PackResult:
    """Packs `root` into `out` (written through a temporary file, then renamed). `progress`, if
    given, is told the files and bytes packed so far after each file.

    Raises ValueError when the files to pack add up to more than `max_bytes`.
    """
    root = Path(root)
    out = Path(out)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicHashedWriter(out) as raw:
        exclude = {os.path.abspath(out), os.path.abspath(raw.tmp)}
        # The tarball is hashed as it is written: every byte of it goes through `raw`.
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            packer = _Packer(root, exclude, max_bytes, tar, progress)
            packer.walk(root, "", [])
        raw.commit()
    return PackResult(sha256=raw.sha256, size=raw.size, file_count=packer.count, skipped=packer.skipped)
