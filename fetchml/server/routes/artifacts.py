from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, put
from litestar.params import Parameter
from litestar.response import File

from fetchml.core.protocol import Artifact
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import USERS, WORKERS


class ArtifactController(Controller):
    path = "/v1/tasks/{task_id:str}/artifacts"
    tags = ["Artifacts"]

    @get("/", opt=USERS, summary="List a task's artifacts (all attempts, newest attempt first)")
    async def list_artifacts(self, request: Request[Any, Any, Any], task_id: str) -> list[Artifact]:
        await services_of(request).tasks.check_contents(principal_of(request), task_id)
        return await services_of(request).artifacts.list(task_id)

    @put(
        "/{path:path}",
        status_code=201,
        opt={**WORKERS, "errors": (409, 413, 422)},
        request_max_body_size=None,  # FETCHML_MAX_ARTIFACT_BYTES is enforced while streaming
        summary="Upload one artifact file of the live attempt (worker)",
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        task_id: str,
        path: str,
        attempt: Annotated[int, Parameter(ge=1, le=2**31 - 1)],
    ) -> Artifact:
        return await services_of(request).artifacts.upload(
            principal_of(request), task_id, attempt, path.lstrip("/"), request.stream()
        )

    @get(
        "/{path:path}",
        opt=USERS,
        media_type="application/octet-stream",
        summary="Download an artifact (audited as file_access)",
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        task_id: str,
        path: str,
        attempt: Annotated[int | None, Parameter(ge=1, le=2**31 - 1)] = None,
    ) -> File:
        # Only the owner and admins: 403 before anything about the file is looked up.
        await services_of(request).tasks.check_contents(principal_of(request), task_id)
        art, file = await services_of(request).artifacts.open_for_download(
            principal_of(request), task_id, path.lstrip("/"), attempt, client_ip(request)
        )
        return File(path=file, filename=art.path.rsplit("/", 1)[-1], media_type="application/octet-stream")
