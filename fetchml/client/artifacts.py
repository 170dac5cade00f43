from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fetchml.client.base import DomainClient, UnexpectedResponseError, parse, parse_list, segment
from fetchml.core.protocol import Artifact
from fetchml.host.files import AtomicHashedWriter


def _path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return "/".join(segment(p) for p in parts)


def safe_destination(root: Path, rel_path: str) -> Path:
    """Where the artifact `rel_path` goes under `root`. ValueError when it could land anywhere
    else: an empty, absolute or drive-letter path, a `..` that climbs out of `root`, a NUL, or a
    symbolic link on the way (following one could leave `root`; a link at the file itself would
    be replaced, but is refused as well: that file is not the artifact). The path comes from the
    server, which another user or a task may have chosen."""
    from fetchml.core.models import check_mount_path

    try:
        if "\x00" in rel_path:
            raise ValueError(rel_path)
        rel = check_mount_path(rel_path)
    except ValueError:
        raise ValueError(f"unsafe artifact path {rel_path!r}: it would leave {root}") from None
    current = root
    for part in rel.split("/"):
        current = current / part
        if current.is_symlink():
            raise ValueError(f"unsafe artifact path {rel_path!r}: {current} is a symbolic link")
        if not current.exists():
            break
    return root / rel


@dataclass
class Downloaded:
    """What `download_all` fetched: one attempt's artifacts and where each now is."""

    directory: Path
    attempt: int | None
    files: list[tuple[Artifact, Path]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(a.size for a, _ in self.files)


class ArtifactsClient(DomainClient):
    def list(self, task_id: str) -> list[Artifact]:
        return parse_list(self._t.request("GET", f"/v1/tasks/{segment(task_id)}/artifacts"), Artifact)

    def upload(self, task_id: str, attempt: int, rel_path: str, file: Path | BinaryIO) -> Artifact:
        """`file`: a path, or a file already open for reading, streamed from where it stands
        (the worker opens outputs itself, without following links, and passes the file)."""
        if isinstance(file, Path):
            with file.open("rb") as fh:
                return self._put(task_id, attempt, rel_path, fh)
        return self._put(task_id, attempt, rel_path, file)

    def _put(self, task_id: str, attempt: int, rel_path: str, fh: BinaryIO) -> Artifact:
        resp = self._t.request(
            "PUT",
            f"/v1/tasks/{segment(task_id)}/artifacts/{_path(rel_path)}",
            params={"attempt": attempt},
            content=fh,
            headers={"Content-Type": "application/octet-stream"},
        )
        return parse(resp, Artifact)

    def download_all(
        self,
        task_id: str,
        directory: Path,
        *,
        attempt: int | None = None,
        on_file: Callable[[Artifact], None] | None = None,
    ) -> Downloaded:
        """Download one attempt's artifacts (default: the newest) into `directory`, keeping their
        relative paths. Every path is checked (safe_destination) before anything is fetched, and
        every file against its sha256. `on_file` is called before each file (progress)."""
        arts = self.list(task_id)
        if attempt is None:
            attempt = max((a.attempt for a in arts), default=None)
        chosen = [a for a in arts if a.attempt == attempt]
        out = Downloaded(directory, attempt)
        targets = [(a, safe_destination(directory, a.path)) for a in chosen]
        for art, dest in targets:
            if on_file is not None:
                on_file(art)
            self.download(task_id, art.path, dest, attempt=art.attempt, sha256=art.sha256)
            out.files.append((art, dest))
        return out

    def download(
        self,
        task_id: str,
        rel_path: str,
        dest: Path,
        *,
        attempt: int | None = None,
        sha256: str | None = None,
    ) -> Path:
        """Stream one artifact to `dest` (through a temporary file beside it: `dest` is whole or
        absent). With `sha256`, a file whose digest differs is refused and not kept."""
        params: dict[str, Any] = {} if attempt is None else {"attempt": attempt}
        dest.parent.mkdir(parents=True, exist_ok=True)
        with AtomicHashedWriter(
            dest,
            expected_sha256=sha256,
            mismatch=lambda _: UnexpectedResponseError(
                f"artifact {rel_path}: the downloaded file does not match its sha256 {sha256}"
            ),
            tmp_prefix=".download-",
            tmp_suffix="",
        ) as out:
            with self._t.stream(
                "GET", f"/v1/tasks/{segment(task_id)}/artifacts/{_path(rel_path)}", params=params
            ) as resp:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
            out.commit()
        return dest
