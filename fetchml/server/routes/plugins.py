"""Tracking plugins (docs/plugins.md): users and admins read (secrets redacted), admins write."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, put

from fetchml.core.models import HealthResponse, PluginConfig
from fetchml.core.plugins import Plugin
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY, USERS


class PluginController(Controller):
    path = "/v1/plugins"
    opt = USERS
    tags = ["Plugins"]

    @get(
        "/", summary="List available plugins", description="mlflow, tensorboard and wandb; secrets redacted."
    )
    async def list_plugins(self, request: Request[Any, Any, Any]) -> list[Plugin]:
        return await services_of(request).plugins.list()

    @get("/{plugin_name:str}", summary="Get plugin details", description="404 for an unknown plugin.")
    async def get_plugin(self, request: Request[Any, Any, Any], plugin_name: str) -> Plugin:
        return await services_of(request).plugins.get(plugin_name)

    @get("/{plugin_name:str}/config", summary="Get plugin configuration", description="Secrets redacted.")
    async def get_config(self, request: Request[Any, Any, Any], plugin_name: str) -> PluginConfig:
        return await services_of(request).plugins.get_config(plugin_name)

    @put(
        "/{plugin_name:str}/config",
        opt=ADMIN_ONLY,
        summary="Update plugin configuration",
        description=(
            "Admins only. Checked per plugin: an unknown setting or a bad value is 422 naming the "
            "field. Applies at once (new tasks use it). Audited as plugin_configured, redacted."
        ),
    )
    async def put_config(
        self, request: Request[Any, Any, Any], plugin_name: str, data: PluginConfig
    ) -> Plugin:
        return await services_of(request).plugins.put_config(
            principal_of(request), plugin_name, data, client_ip(request)
        )

    @delete("/{plugin_name:str}/config", opt=ADMIN_ONLY, summary="Disable/unload plugin")
    async def disable_plugin(self, request: Request[Any, Any, Any], plugin_name: str) -> None:
        await services_of(request).plugins.disable(principal_of(request), plugin_name, client_ip(request))

    @get(
        "/{plugin_name:str}/health",
        summary="Check plugin health",
        description="A remote is probed for reachability (any HTTP answer within 3 s); disabled is unhealthy.",
    )
    async def plugin_health(self, request: Request[Any, Any, Any], plugin_name: str) -> HealthResponse:
        return await services_of(request).plugins.health(plugin_name)
