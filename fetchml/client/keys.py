from __future__ import annotations

from fetchml.client.base import DomainClient
from fetchml.core.enums import Role
from fetchml.core.models import ApiKeyInfo, CreatedKey


class KeysClient(DomainClient):
    def list(self) -> list[ApiKeyInfo]:
        return [ApiKeyInfo.model_validate(k) for k in self._t.request("GET", "/v1/keys").json()]

    def create(self, user: str, role: Role | str) -> CreatedKey:
        resp = self._t.request("POST", "/v1/keys", json={"user": user, "role": str(role)})
        return CreatedKey.model_validate(resp.json())

    def revoke(self, key_id: str) -> None:
        self._t.request("DELETE", f"/v1/keys/{key_id}")
