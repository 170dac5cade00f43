"""Artifacts: files a task wrote to $FETCHML_OUTPUT_DIR, uploaded by its worker while the task
is `collecting`, kept under <data dir>/artifacts/<task>/<attempt>/<path>. Downloads are audited
as file_access."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, Role, TaskStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.models import check_mount_path
from fetchml.core.protocol import Artifact
from fetchml.host.files import AtomicHashedWriter
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.task_rows import audit_task, task_row
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import ArtifactRow, TaskRow, WorkerRow

log = logging.getLogger("fetchml.artifacts")


def clean_artifact_path(path: str) -> str:
    try:
        return check_mount_path(path)
    except ValueError:
        raise ValidationError(
            f"artifact path {path!r} must be relative and stay inside the task's output folder"
        ) from None


def _to_wire(row: ArtifactRow) -> Artifact:
    return Artifact(
        path=row.path, size=row.size, sha256=row.sha256, attempt=row.attempt, created_at=row.created_at
    )


TENSORBOARD_PREFIX = "tensorboard/"


def _mirror(src: Path, dest: Path) -> None:
    """A hard link (a copy across file systems) of an uploaded TensorBoard file; failing to make
    one costs the task nothing but its place in TensorBoard."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        log.warning("could not place %s for TensorBoard: %s", src, exc)
        tmp.unlink(missing_ok=True)


class ArtifactTooLargeError(ValidationError):
    status = 413
    code = "BAD_REQUEST"


class ArtifactService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        data_dir: Path,
        max_bytes: int,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.writer = writer
        self.root = data_dir / "artifacts"
        self.max_bytes = max_bytes
        # Files under the outputs' tensorboard/ folder also appear here, as <task>/<path>:
        # the TensorBoard sidecar serves this folder (docs/plugins.md).
        self.tensorboard_dir = tensorboard_dir

    def _file(self, task_id: str, attempt: int, path: str) -> Path:
        return self.root / task_id / str(attempt) / path

    async def _check_upload(self, principal: Principal, task_id: str, attempt: int) -> None:
        def q(session: Session) -> None:
            task = task_row(session, task_id)
            if (
                task.attempt != attempt
                or TaskStatus(task.status) not in ACTIVE_STATUSES
                or task.worker_id is None
            ):
                raise ConflictError(
                    f"Stale artifact upload for task {task_id}: attempt {attempt} is not live"
                )
            worker = session.get(WorkerRow, task.worker_id)
            if principal.role is not Role.ADMIN and (worker is None or worker.key_id != principal.key_id):
                raise ForbiddenError("Task is held by another worker")

        await read(self.db, q)

    async def upload(
        self, principal: Principal, task_id: str, attempt: int, path: str, body: AsyncIterator[bytes]
    ) -> Artifact:
        rel = clean_artifact_path(path)
        await self._check_upload(principal, task_id, attempt)
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self._file(task_id, attempt, rel)
        # The temporary file sits in the artifacts folder, not beside `dest`: the attempt's folders
        # are made only when the file is placed, where a collision is told apart.
        out = await asyncio.to_thread(
            AtomicHashedWriter,
            dest,
            limit=self.max_bytes,
            too_large=lambda: ArtifactTooLargeError(f"artifact larger than {self.max_bytes} bytes"),
            tmp_dir=self.root,
            tmp_prefix=".upload-",
            tmp_suffix="",
        )
        try:
            async for chunk in body:
                await asyncio.to_thread(out.write, chunk)

            def place() -> None:
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    out.commit()
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    # `a` and `a/b` in one attempt: a file and a folder cannot share a name.
                    raise ConflictError(
                        f"artifact path {rel!r} collides with another artifact of attempt {attempt}"
                    ) from None

            await asyncio.to_thread(place)
            if self.tensorboard_dir is not None and rel.startswith(TENSORBOARD_PREFIX):
                await asyncio.to_thread(
                    _mirror, dest, self.tensorboard_dir / task_id / rel[len(TENSORBOARD_PREFIX) :]
                )
        finally:
            await asyncio.to_thread(out.discard)

        size, sha = out.size, out.sha256

        def op(tx: Tx) -> Artifact:
            tx.session.execute(
                delete(ArtifactRow).where(
                    col(ArtifactRow.task_id) == task_id,
                    col(ArtifactRow.attempt) == attempt,
                    col(ArtifactRow.path) == rel,
                )
            )
            row = ArtifactRow(
                task_id=task_id, attempt=attempt, path=rel, size=size, sha256=sha, created_at=tx.clock.now()
            )
            tx.session.add(row)
            return _to_wire(row)

        return await self.writer.run(op)

    async def list(self, task_id: str) -> list[Artifact]:
        def q(session: Session) -> list[Artifact]:
            if session.scalar(select(col(TaskRow.id)).where(col(TaskRow.id) == task_id)) is None:
                raise NotFoundError(f"Task {task_id} not found")
            rows = session.scalars(
                select(ArtifactRow)
                .where(col(ArtifactRow.task_id) == task_id)
                .order_by(col(ArtifactRow.attempt).desc(), col(ArtifactRow.path))
            ).all()
            return [_to_wire(r) for r in rows]

        return await read(self.db, q)

    async def open_for_download(
        self, principal: Principal, task_id: str, path: str, attempt: int | None, ip_address: str | None
    ) -> tuple[Artifact, Path]:
        rel = clean_artifact_path(path)

        def q(session: Session) -> Artifact:
            stmt = select(ArtifactRow).where(
                col(ArtifactRow.task_id) == task_id, col(ArtifactRow.path) == rel
            )
            if attempt is not None:
                stmt = stmt.where(col(ArtifactRow.attempt) == attempt)
            row = session.scalars(stmt.order_by(col(ArtifactRow.attempt).desc()).limit(1)).first()
            if row is None:
                raise NotFoundError(f"Task {task_id} has no artifact {rel}")
            return _to_wire(row)

        art = await read(self.db, q)
        file = self._file(task_id, art.attempt, art.path)
        if not file.is_file():
            raise NotFoundError(f"Artifact {rel} of task {task_id} is missing from storage")

        def audit(tx: Tx) -> None:
            audit_task(
                tx,
                AuditEventType.FILE_ACCESS,
                task_id,
                part=f"artifact:{art.path}",
                user_id=principal.user_id,
                action="download",
                ip_address=ip_address,
                metadata={"attempt": art.attempt, "size": art.size, "sha256": art.sha256},
            )

        await self.writer.run(audit)
        return art, file
