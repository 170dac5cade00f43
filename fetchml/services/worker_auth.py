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
    _check_name(principal, worker_id)
    row = tx.session.get(WorkerRow, worker_id)
    _check_owner(principal, worker_id, None if row is None else row.key_id)
    assert row is not None
    return row


def check_owned_worker(tx: Tx, principal: Principal, worker_id: str) -> None:
    """`owned_worker`'s checks, reading only the key id: for a caller that does not need the row
    (a status report reads no more of the worker than whose it is)."""
    _check_name(principal, worker_id)
    row = tx.session.execute(_KEY_OF, {"id": worker_id}).first()
    _check_owner(principal, worker_id, None if row is None else row[0])


def _check_name(principal: Principal, worker_id: str) -> None:
    # The key's bound name first: a stolen key learns nothing about other workers' names.
    if not principal.may_act_as_worker(worker_id):
        raise ForbiddenError(f"This key may act only as worker {principal.worker_name!r}")


def _check_owner(principal: Principal, worker_id: str, key_id: str | None) -> None:
    """`key_id`: the registered worker's key, None when no such worker is registered."""
    if key_id is None:
        raise NotFoundError(f"Worker {worker_id} is not registered")
    if principal.role is not Role.ADMIN and key_id != principal.key_id:
        raise ForbiddenError(f"Worker {worker_id} belongs to another key")


_KEY_OF = select(col(WorkerRow.key_id)).where(col(WorkerRow.id) == bindparam("id"))
