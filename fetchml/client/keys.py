from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list, segment
from fetchml.core.enums import Role
from fetchml.core.models import ApiKeyInfo, CreatedKey


class KeysClient(DomainClient):
    def list(self) -> list[ApiKeyInfo]:
        return parse_list(self._t.request("GET", "/v1/keys"), ApiKeyInfo)

    def create(self, user: str, role: Role | str) -> CreatedKey:
        resp = self._t.request("POST", "/v1/keys", json={"user": user, "role": str(role)})
        return parse(resp, CreatedKey)

    def revoke(self, key_id: str) -> None:
        self._t.request("DELETE", f"/v1/keys/{segment(key_id)}")
