"""Tracking plugins (`client.plugins`)."""

from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list, segment
from fetchml.core.models import HealthResponse, PluginConfig
from fetchml.core.plugins import Plugin


class PluginsClient(DomainClient):
    def list(self) -> list[Plugin]:
        return parse_list(self._t.request("GET", "/v1/plugins"), Plugin)

    def get(self, name: str) -> Plugin:
        return parse(self._t.request("GET", f"/v1/plugins/{segment(name)}"), Plugin)

    def config(self, name: str) -> PluginConfig:
        return parse(self._t.request("GET", f"/v1/plugins/{segment(name)}/config"), PluginConfig)

    def configure(self, name: str, config: PluginConfig) -> Plugin:
        body = config.model_dump(mode="json", exclude_none=True)
        return parse(self._t.request("PUT", f"/v1/plugins/{segment(name)}/config", json=body), Plugin)

    def disable(self, name: str) -> None:
        resp = self._t.request("DELETE", f"/v1/plugins/{segment(name)}/config")
        if resp.status_code != 204:
            parse(resp, Plugin)  # raises the envelope's error

    def health(self, name: str) -> HealthResponse:
        return parse(self._t.request("GET", f"/v1/plugins/{segment(name)}/health"), HealthResponse)
