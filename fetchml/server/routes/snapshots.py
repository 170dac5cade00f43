"""Content-addressed snapshots: users upload (and so own what they uploaded), ask whether one
they may use exists, admins share one with every user; workers fetch those their attempts run."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, Router, get, head, post, put
from litestar.response import File

from fetchml.core.snapshots_models import SnapshotInfo
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY, READERS, USERS, WORKERS


class SnapshotController(Controller):
    path = "/v1/snapshots"
    tags = ["Snapshots"]

    @put(
        "/{sha256:str}",
        status_code=201,
        opt={**USERS, "errors": (413, 422)},
        summary="Upload a snapshot (gzip tarball) under its SHA-256; 200 if it was already stored",
    )
    async def put_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> Response[SnapshotInfo]:
        snapshots = services_of(request).snapshots
        info = await snapshots.put(sha256, request.stream())
        # The uploader proved they hold these bytes: they may name the digest in their tasks.
        await snapshots.record_owner(principal_of(request), sha256)
        return Response(info, status_code=200 if info.existed else 201)

    @head(
        "/{sha256:str}",
        opt=READERS,
        summary="Does this snapshot exist for me? 200, or 404 (also for another user's unshared upload)",
    )
    async def head_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> None:
        snapshots = services_of(request).snapshots
        await snapshots.check_visible(principal_of(request), sha256)
        await snapshots.path(sha256)

    @get(
        "/{sha256:str}",
        opt=WORKERS,
        media_type="application/gzip",  # the document's content type for the File it returns
        summary="Download a snapshot (admins; a worker only for an attempt it holds)",
    )
    async def get_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> File:
        snapshots = services_of(request).snapshots
        file = await snapshots.path(sha256)
        await snapshots.check_download(principal_of(request), sha256)
        return File(path=file, filename=f"{sha256}.tar.gz", media_type="application/gzip")

    @post(
        "/{sha256:str}/share",
        opt=ADMIN_ONLY,
        status_code=204,
        summary="Share a snapshot with every user (admin): any task may then name it",
    )
    async def share_snapshot(self, request: Request[Any, Any, Any], sha256: str) -> None:
        await services_of(request).snapshots.share(principal_of(request), sha256, client_ip(request))


def snapshot_router(max_bytes: int) -> Router:
    """The snapshot routes with their own body limit: the snapshot cap, not the JSON one."""
    return Router(path="/", route_handlers=[SnapshotController], request_max_body_size=max_bytes)
