"""Which worker a key may act as: shared by the task and service halves of the worker protocol."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlmodel import col

from fetchml.core.enums import Role
from fetchml.core.errors import ForbiddenError, NotFoundError
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx
from fetchml.store.tables import WorkerRow


def owned_worker(tx: Tx, principal: Principal, worker_id: str) -> WorkerRow:
    # The key's bound name first: a stolen key learns nothing about other workers' names.
    if not principal.may_act_as_worker(worker_id):
        raise ForbiddenError(f"This key may act only as worker {principal.worker_name!r}")
    row = tx.session.get(WorkerRow, worker_id)
    if row is None:
        raise NotFoundError(f"Worker {worker_id} is not registered")
    if principal.role is not Role.ADMIN and row.key_id != principal.key_id:
        raise ForbiddenError(f"Worker {worker_id} belongs to another key")
    return row


def check_owned_worker(tx: Tx, principal: Principal, worker_id: str) -> None:
    """`owned_worker`'s checks, reading only the key id: for a caller that does not need the row
    (a status report reads no more of the worker than whose it is)."""
    if not principal.may_act_as_worker(worker_id):
        raise ForbiddenError(f"This key may act only as worker {principal.worker_name!r}")
    row = tx.session.execute(_KEY_OF, {"id": worker_id}).first()
    if row is None:
        raise NotFoundError(f"Worker {worker_id} is not registered")
    if principal.role is not Role.ADMIN and row[0] != principal.key_id:
        raise ForbiddenError(f"Worker {worker_id} belongs to another key")


_KEY_OF = select(col(WorkerRow.key_id)).where(col(WorkerRow.id) == bindparam("id"))
