"""The server side of a decision: the bounded read of the queue and its fallback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fetchml.services.placement import QUEUE_HEAD_MIN
from tests.harness import ServerHandle
from tests.protocol_kit import FakeWorker, cancel_leftovers, get_task, submit, unique


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


def test_a_task_behind_a_full_head_of_blocked_tasks_still_runs(srv: ServerHandle) -> None:
    """A claim reads the oldest few tasks of each priority first; when none of them fit the
    asking worker it reads the whole queue, so a fitting task further back is not missed."""
    admin, user = srv.make_key("root", "admin"), srv.make_key("alice", "user")
    w = FakeWorker(srv, srv.make_key("box", "worker"))
    w.register(gpus=[0], gpu_type=unique("T"), batch_slots=1)
    try:
        blocked = [
            submit(srv, user, "blocked", gpu=1, gpu_type=unique("nope")).id for _ in range(QUEUE_HEAD_MIN + 3)
        ]
        fits = submit(srv, user, "fits", gpu=1).id
        a = w.must_claim()
        assert a.task.id == fits
        reason = get_task(srv, user, blocked[0]).pending_reason
        assert reason is not None and reason.startswith("no worker can ever fit this"), reason
    finally:
        cancel_leftovers(srv, admin)
        w.close()
