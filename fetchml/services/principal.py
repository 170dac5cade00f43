from __future__ import annotations

from dataclasses import dataclass

from fetchml.core.enums import Role


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: Role
    key_id: str
    # The one worker name a worker key may act as; None for users and admins (admins may act
    # for any worker).
    worker_name: str | None = None

    def may_act_as_worker(self, worker_id: str) -> bool:
        return self.role is Role.ADMIN or (self.role is Role.WORKER and self.worker_name == worker_id)

    def may_see_contents_of(self, owner: str) -> bool:
        """Args, logs, artifacts... of a task owned by `owner` (see FETCHML_SHARED_TASK_CONTENTS
        for opening them to every user)."""
        return self.role is Role.ADMIN or (self.role is Role.USER and self.user_id == owner)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# Who acts when an operator runs `fetchml keys ...` against the database directly.
LOCAL_OPERATOR = Principal(user_id="local-operator", role=Role.ADMIN, key_id="local")
