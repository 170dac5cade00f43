from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fetchml.client.base import DomainClient, parse, parse_list, segment
from fetchml.core.protocol import Artifact


def _path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return "/".join(segment(p) for p in parts)


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

    def download(self, task_id: str, rel_path: str, dest: Path, *, attempt: int | None = None) -> Path:
        params: dict[str, Any] = {} if attempt is None else {"attempt": attempt}
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as fh,
                self._t.stream(
                    "GET", f"/v1/tasks/{segment(task_id)}/artifacts/{_path(rel_path)}", params=params
                ) as resp,
            ):
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    fh.write(chunk)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest
