"""Content-addressed snapshots: users upload, everyone may ask whether one exists, workers fetch."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, Router, get, head, put
from litestar.response import File

from fetchml.core.snapshots_models import SnapshotInfo
from fetchml.server.context import services_of
from fetchml.server.security import READERS, USERS, WORKERS


class SnapshotController(Controller):
    path = "/v1/snapshots"
    tags = ["Snapshots"]

    @put(
        "/{sha256:str}",
        guards=USERS,
        status_code=201,
        summary="Upload a snapshot (gzip tarball) under its SHA-256; 200 if it was already stored",
    )
    async def put_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> Response[SnapshotInfo]:
        info = await services_of(request).snapshots.put(sha256, request.stream())
        return Response(info, status_code=200 if info.existed else 201)

    @head("/{sha256:str}", guards=READERS, summary="Does this snapshot exist? 200 or 404")
    async def head_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> None:
        await services_of(request).snapshots.path(sha256)

    @get("/{sha256:str}", guards=WORKERS, summary="Download a snapshot (workers)")
    async def get_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> File:
        file = await services_of(request).snapshots.path(sha256)
        return File(path=file, filename=f"{sha256}.tar.gz", media_type="application/gzip")


def snapshot_router(max_bytes: int) -> Router:
    """The snapshot routes with their own body limit: the snapshot cap, not the JSON one."""
    return Router(path="/", route_handlers=[SnapshotController], request_max_body_size=max_bytes)
