"""Reservations: free GPUs held for one user until they expire. Other users' tasks never get
them; the owner's tasks that carry the reservation's id do; at expiry (the ManualClock moved
past it) they go back to everyone, and the sweep records the expiry in the audit log."""

from __future__ import annotations

from typing import Any

import pytest

from fetchml.core.enums import AuditEventType, Role
from fetchml.core.errors import ConflictError, ForbiddenError, ValidationError
from fetchml.core.models import CreateReservationRequest, Reservation
from fetchml.services.principal import Principal
from tests.services.conftest import ALICE, BOB, T0, Kit

# Reservations are created by admins, for themselves: Bob's admin key makes his, and his user
# key (the same user id) submits the tasks that use it.
BOB_ADMIN = Principal(user_id=BOB.user_id, role=Role.ADMIN, key_id="k-bob-admin")


def reserve(kit: Kit, gpus: int, minutes: int = 10, **fields: Any) -> Reservation:
    req = CreateReservationRequest(gpu_count=gpus, expires_minutes=minutes, **fields)
    return kit.run(kit.services.reservations.create(BOB_ADMIN, req))


def test_a_reservation_takes_free_gpus_and_is_audited(kit: Kit) -> None:
    kit.register("w1", gpus=4, gpu_type="A100")
    res = reserve(kit, 2, gpu_type="a100")
    assert (res.user_id, res.status, res.expires_at) == ("bob", "active", T0.replace(minute=10))
    [(worker, held)] = res.gpus.items()
    assert worker == "w1" and len(held) == 2
    [ev] = kit.audit(AuditEventType.RESERVATION_CREATED, f"reservation:{res.id}")
    assert ev.user_id == "bob"
    # What is reserved is no longer free to reserve.
    with pytest.raises(ConflictError):
        reserve(kit, 3)
    with pytest.raises(ConflictError):
        reserve(kit, 1, gpu_type="H100")


def test_reserved_gpus_are_not_given_to_other_users(kit: Kit) -> None:
    kit.register("w1", gpus=2, batch_slots=8)
    res = reserve(kit, 1)
    [held] = res.gpus.values()
    whole = kit.submit(ALICE, name="whole", gpu=2, priority=10)
    assert kit.claim("w1") is None
    reason = kit.task(whole.id).pending_reason
    assert reason is not None and res.id in reason, reason
    # What the reservation leaves free still goes to anyone.
    half = kit.submit(ALICE, name="half", gpu=1)
    a = kit.must_claim("w1")
    assert (a.task.id, a.gpus) == (half.id, [g for g in (0, 1) if g not in held])
    assert kit.claim("w1") is None
    assert kit.task(whole.id).status == "queued"
    # The owner's own task without the reservation's id runs on shared capacity only, too.
    plain = kit.submit(BOB, name="plain", gpu=1)
    assert kit.claim("w1") is None
    assert kit.task(plain.id).status == "queued"


def test_the_owners_task_runs_on_the_reserved_gpus(kit: Kit) -> None:
    kit.register("w1", gpus=2, batch_slots=8)
    res = reserve(kit, 1)
    [held] = res.gpus.values()
    # Alice's task got there first and takes the only unreserved GPU.
    alice = kit.submit(ALICE, name="alice", gpu=1, priority=10)
    assert kit.must_claim("w1").task.id == alice.id
    mine = kit.submit(BOB, name="mine", gpu=1, reservation_id=res.id)
    a = kit.must_claim("w1")
    assert (a.task.id, a.gpus) == (mine.id, held)
    [listed] = kit.run(kit.services.reservations.list())
    assert listed.status == "claimed"
    [ev] = kit.audit(AuditEventType.RESERVATION_CLAIMED, f"reservation:{res.id}")
    assert ev.extra_metadata == {"task_id": mine.id}
    # Claimed reservations keep holding their GPUs: when the task ends, the next one of Bob's
    # gets them, Alice's does not.
    kit.run_to("w1", a, "running", "completed", exit_code=0)
    other = kit.submit(ALICE, name="other", gpu=1, priority=10)
    again = kit.submit(BOB, name="again", gpu=1, reservation_id=res.id, priority=1)
    b = kit.must_claim("w1")
    assert (b.task.id, b.gpus) == (again.id, held)
    assert kit.task(other.id).status == "queued"


def test_only_the_owner_may_name_a_live_reservation(kit: Kit) -> None:
    kit.register("w1", gpus=1)
    res = reserve(kit, 1, minutes=1)
    with pytest.raises(ForbiddenError):
        kit.submit(ALICE, name="theirs", gpu=1, reservation_id=res.id)
    with pytest.raises(ValidationError):
        kit.submit(BOB, name="unknown", gpu=1, reservation_id="r-nope")
    kit.clock.advance(60)
    with pytest.raises(ValidationError):
        kit.submit(BOB, name="late", gpu=1, reservation_id=res.id)


def test_expiry_releases_the_gpus(kit: Kit) -> None:
    kit.register("w1", gpus=2, batch_slots=8)
    res = reserve(kit, 2, minutes=5)
    waiting = kit.submit(ALICE, name="waiting", gpu=2)
    assert kit.claim("w1") is None
    kit.clock.advance(5 * 60 - 1)
    assert kit.claim("w1") is None
    assert kit.sweep() == []
    kit.clock.advance(1)
    # Expired the moment its time is up, before the sweep records it.
    assert kit.run(kit.services.reservations.list()) == []
    a = kit.must_claim("w1")
    assert (a.task.id, sorted(a.gpus)) == (waiting.id, [0, 1])
    assert res.id in kit.sweep()
    [listed] = kit.run(kit.services.reservations.list(include_expired=True))
    assert listed.status == "expired"
    [ev] = kit.audit(AuditEventType.RESERVATION_EXPIRED, f"reservation:{res.id}")
    assert ev.extra_metadata["previous_status"] == "active"
    assert kit.sweep() == []  # recorded once


def test_a_task_whose_reservation_expired_runs_on_shared_capacity(kit: Kit) -> None:
    kit.register("w1", gpus=1)
    res = reserve(kit, 1, minutes=1)
    mine = kit.submit(BOB, name="mine", gpu=1, reservation_id=res.id)
    kit.clock.advance(60)  # expired before any worker claimed
    a = kit.must_claim("w1")
    assert (a.task.id, a.gpus) == (mine.id, [0])
    assert kit.audit(AuditEventType.RESERVATION_CLAIMED) == []
    [listed] = kit.run(kit.services.reservations.list(include_expired=True))
    assert listed.status == "expired"
