from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post

from fetchml.core.models import ApiKeyInfo, CreatedKey, CreateKeyRequest
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY


class KeyController(Controller):
    path = "/v1/keys"
    opt = ADMIN_ONLY
    tags = ["Keys"]

    @get("/", summary="List API keys (never the keys themselves)")
    async def list_keys(self, request: Request[Any, Any, Any]) -> list[ApiKeyInfo]:
        return await services_of(request).keys.list()

    @post("/", summary="Create an API key; the key is in this response only", opt={"errors": (409,)})
    async def create_key(self, request: Request[Any, Any, Any], data: CreateKeyRequest) -> CreatedKey:
        return await services_of(request).keys.create(
            data.user, data.role, principal_of(request), client_ip(request), worker_name=data.worker_name
        )

    @delete("/{key_id:str}", summary="Revoke an API key", opt={"errors": (409,)})
    async def revoke_key(self, request: Request[Any, Any, Any], key_id: str) -> None:
        await services_of(request).keys.revoke(key_id, principal_of(request), client_ip(request))
