from __future__ import annotations

from dataclasses import dataclass

from fetchml.core.enums import Role


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: Role
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# Who acts when an operator runs `fetchml keys ...` against the database directly.
LOCAL_OPERATOR = Principal(user_id="local-operator", role=Role.ADMIN, key_id="local")
