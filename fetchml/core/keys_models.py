"""Wire models of API keys: the creation request, a key as listed and a key just created."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, model_validator

from fetchml.core.enums import Role
from fetchml.core.wire import JOB_NAME_PATTERN, Wire


class CreateKeyRequest(Wire):
    user: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)]
    role: Role
    # The one worker name a worker key may register (default: `user`); other roles take none.
    worker_name: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)] | None = None

    @model_validator(mode="after")
    def _worker_name_only_for_workers(self) -> CreateKeyRequest:
        if self.worker_name is not None and self.role is not Role.WORKER:
            raise ValueError("worker_name is only valid for role worker")
        return self


class ApiKeyInfo(Wire):
    id: str
    user_id: str
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    worker_name: str | None = None


class CreatedKey(ApiKeyInfo):
    key: str
