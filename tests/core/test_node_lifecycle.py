"""The node lifecycle of core/nodes.py: the transition table, the stored JSON shape of a node,
and the rules a gang lives by (stopping, its outcome, whether a retry is spent)."""

from __future__ import annotations

import itertools
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchml.core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES, ReservationStatus, TaskStatus
from fetchml.core.errors import ConflictError
from fetchml.core.nodes import (
    MASTER_PORT_BASE,
    NODE_TRANSITIONS,
    TERMINAL_NODE,
    GangEnd,
    NodeStatus,
    PlacedNode,
    all_live_collecting,
    can_node_transition,
    check_node_transition,
    gang_outcome,
    is_stopping,
    master_port,
    spends_retry,
    stop_unstarted,
)
from fetchml.core.protocol import StatusReport
from tests.harness import CONTRACT_SCHEMAS

N = NodeStatus
# In NodeStatus order, not the frozensets' (their order differs between processes, and xdist
# workers must collect the same ids).
EDGES = [(a, b) for a, exits in NODE_TRANSITIONS.items() for b in NodeStatus if b in exits]
NON_EDGES = [(a, b) for a, b in itertools.product(NodeStatus, NodeStatus) if b not in NODE_TRANSITIONS[a]]
# What a worker can report (StatusReport.status), as node statuses.
REPORTABLE = [N(s.value) for s in get_args(StatusReport.model_fields["status"].annotation)]


# --- the table ------------------------------------------------------------------------------


def test_values_are_the_strings_stored() -> None:
    assert [s.value for s in NodeStatus] == [
        "assigned", "preparing", "running", "collecting", "completed", "failed", "stopped", "lost",
    ]  # fmt: skip
    # A node's progress is its worker's reports: every task status but queued is a node status.
    assert {s.value for s in ACTIVE_STATUSES | TERMINAL_STATUSES} <= {s.value for s in NodeStatus}
    assert TaskStatus.QUEUED.value not in {s.value for s in NodeStatus}  # a queued task has no nodes


def test_table_names_every_status() -> None:
    assert set(NODE_TRANSITIONS) == set(NodeStatus)


@pytest.mark.parametrize(("current", "new"), EDGES, ids=[f"{a}->{b}" for a, b in EDGES])
def test_every_legal_edge_is_accepted(current: NodeStatus, new: NodeStatus) -> None:
    assert can_node_transition(current, new)
    check_node_transition(current, new)
    node = PlacedNode(node_id=0, worker_id="w", slot_assigned=True, status=current)
    node.move_to(new)
    assert node.status is new


@pytest.mark.parametrize(("current", "new"), NON_EDGES, ids=[f"{a}->{b}" for a, b in NON_EDGES])
def test_every_other_pair_is_a_conflict(current: NodeStatus, new: NodeStatus) -> None:
    assert not can_node_transition(current, new)
    with pytest.raises(ConflictError, match=f"^Node cannot move from {current.value} to {new.value}$"):
        check_node_transition(current, new)
    node = PlacedNode(node_id=0, worker_id="w", slot_assigned=True, status=current)
    with pytest.raises(ConflictError):
        node.move_to(new)
    assert node.status is current  # a refused move changes nothing


def test_terminal_states_have_no_exits() -> None:
    assert {N.COMPLETED, N.FAILED, N.STOPPED, N.LOST} == TERMINAL_NODE
    for s in TERMINAL_NODE:
        assert NODE_TRANSITIONS[s] == frozenset()
        assert not PlacedNode(node_id=0, worker_id="w", status=s).live
    for s in set(NodeStatus) - TERMINAL_NODE:
        assert NODE_TRANSITIONS[s]
        assert PlacedNode(node_id=0, worker_id="w", status=s).live


def test_a_report_conflicts_exactly_when_it_moves_a_claimed_node_backwards() -> None:
    """The rule before the table: a gang node's report was refused only when it went back in
    assigned -> preparing -> running -> collecting. A claimed live node is preparing, running
    or collecting, and a report that repeats its status changes nothing before the table is
    asked; a failure of a stopping gang is recorded as stopped, and a lost worker as lost."""
    order = [N.ASSIGNED, N.PREPARING, N.RUNNING, N.COLLECTING]
    for current in (N.PREPARING, N.RUNNING, N.COLLECTING):
        for new in REPORTABLE:
            if new is current:
                continue
            backwards = new in order and order.index(new) < order.index(current)
            assert can_node_transition(current, new) is not backwards, (current, new)
        assert can_node_transition(current, N.STOPPED)
        assert can_node_transition(current, N.LOST)


def test_subject_names_the_node_in_the_conflict() -> None:
    with pytest.raises(ConflictError, match=r"^Node 1 of task t-1 cannot move from collecting to running$"):
        check_node_transition(N.COLLECTING, N.RUNNING, subject="Node 1 of task t-1")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(NodeStatus)), max_size=12))
def test_legal_walks_never_revisit_a_status(moves: list[NodeStatus]) -> None:
    """Whatever is asked, a node only moves along the table, and never comes back to a status
    it left: the table has no cycle, so every node ends after a bounded number of moves."""
    node = PlacedNode(node_id=0, worker_id="w")
    seen = [node.status]
    for new in moves:
        before = node.status
        try:
            node.move_to(new)
        except ConflictError:
            assert not can_node_transition(before, new)
            assert node.status is before
            continue
        assert can_node_transition(before, new)
        assert new not in seen
        seen.append(new)
    assert len(seen) <= 5  # the longest path: assigned, preparing, running, collecting, an end


def test_claim() -> None:
    node = PlacedNode(node_id=0, worker_id="w")
    node.claim()
    assert (node.slot_assigned, node.status) == (True, N.PREPARING)
    with pytest.raises(ConflictError):
        node.claim()


# --- the stored JSON ------------------------------------------------------------------------


PLACED = {"node_id": 1, "worker_id": "w1", "slot_assigned": False, "gpus": [2, 3], "status": "assigned"}


@pytest.mark.parametrize(
    "stored",
    [
        PLACED,
        {**PLACED, "slot_assigned": True, "status": "running"},
        {**PLACED, "slot_assigned": True, "status": "completed", "exit_code": 0},
        {**PLACED, "slot_assigned": True, "status": "failed", "exit_code": None},  # no code: still stored
        {**PLACED, "slot_assigned": True, "status": "lost", "interrupted": True, "exit_code": 143},
        {**PLACED, "status": "lost"},
        {
            "node_id": 0,
            "worker_id": "w0",
            "slot_assigned": True,
            "gpus": [],
            "status": "stopped",
            "exit_code": 1,
        },
    ],
)
def test_json_round_trip_keeps_the_stored_dict(stored: dict[str, Any]) -> None:
    again = PlacedNode.from_json(stored).to_json()
    assert list(again.items()) == list(stored.items())  # keys, values and their order


@settings(max_examples=200, deadline=None)
@given(
    node_id=st.integers(0, 1023),
    worker=st.text(min_size=1, max_size=8),
    slot=st.booleans(),
    gpus=st.lists(st.integers(0, 15), max_size=8, unique=True),
    status=st.sampled_from(list(NodeStatus)),
    interrupted=st.booleans(),
    exit_code=st.none() | st.just("absent") | st.integers(-255, 255),
)
def test_json_round_trip_of_any_entry(
    node_id: int,
    worker: str,
    slot: bool,
    gpus: list[int],
    status: NodeStatus,
    interrupted: bool,
    exit_code: Any,
) -> None:
    stored: dict[str, Any] = {
        "node_id": node_id, "worker_id": worker, "slot_assigned": slot, "gpus": gpus, "status": status.value,
    }  # fmt: skip
    if interrupted:
        stored["interrupted"] = True
    if exit_code != "absent":
        stored["exit_code"] = exit_code
    node = PlacedNode.from_json(stored)
    assert list(node.to_json().items()) == list(stored.items())
    assert type(node.to_json()["status"]) is str  # stored as a plain string, never an enum


def test_legacy_entries_read_as_their_task() -> None:
    """Entries written before nodes carried gpus and status: node 0 holds the task's GPUs, a
    claimed node is at the task's status, an unclaimed one is assigned. Written back, they
    carry both."""
    legacy = {"node_id": 0, "worker_id": "w0", "slot_assigned": True}
    node = PlacedNode.from_json(legacy, task_gpus=[0, 1], task_status="running")
    assert node.to_json() == {**legacy, "gpus": [0, 1], "status": "running"}
    assert list(node.to_json()) == ["node_id", "worker_id", "slot_assigned", "gpus", "status"]
    other = PlacedNode.from_json(
        {"node_id": 1, "worker_id": "w1", "slot_assigned": False}, task_gpus=[0, 1], task_status="running"
    )
    assert (other.gpus, other.status) == ([], N.ASSIGNED)
    # What is stored wins over the task's values.
    kept = PlacedNode.from_json(
        {**legacy, "gpus": [5], "status": "collecting"}, task_gpus=[0], task_status="running"
    )
    assert (kept.gpus, kept.status) == ([5], N.COLLECTING)


def test_an_unknown_stored_status_is_refused() -> None:
    with pytest.raises(ValueError):
        PlacedNode.from_json({**PLACED, "status": "queued"})


# --- a gang's rules -------------------------------------------------------------------------


def gang(*statuses: NodeStatus, claimed: bool = True) -> list[PlacedNode]:
    return [
        PlacedNode(node_id=i, worker_id=f"w{i}", slot_assigned=claimed, status=s)
        for i, s in enumerate(statuses)
    ]


def test_is_stopping() -> None:
    assert not is_stopping(False, gang(N.RUNNING, N.COMPLETED, N.STOPPED))
    assert is_stopping(True, gang(N.RUNNING, N.RUNNING))
    assert is_stopping(False, gang(N.RUNNING, N.FAILED))
    assert is_stopping(False, gang(N.RUNNING, N.LOST))


def test_stop_unstarted_loses_only_unclaimed_live_nodes() -> None:
    nodes = gang(N.RUNNING, N.ASSIGNED) + gang(N.ASSIGNED, claimed=False) + gang(N.LOST, claimed=False)
    nodes[1].slot_assigned = False
    stop_unstarted(nodes)
    assert [n.status for n in nodes] == [N.RUNNING, N.LOST, N.LOST, N.LOST]


def test_all_live_collecting() -> None:
    assert all_live_collecting(gang(N.COLLECTING, N.COMPLETED))
    assert not all_live_collecting(gang(N.COLLECTING, N.RUNNING))
    assert not all_live_collecting(gang(N.COMPLETED, N.COMPLETED))  # nothing live: nothing collects


@pytest.mark.parametrize(
    ("statuses", "cancel", "outcome"),
    [
        ((N.RUNNING, N.COMPLETED), False, None),  # a node still holds its GPUs
        ((N.FAILED, N.COLLECTING), True, None),
        ((N.COMPLETED, N.COMPLETED), False, GangEnd.COMPLETED),
        ((N.COMPLETED, N.COMPLETED), True, GangEnd.COMPLETED),  # done before the cancel took
        ((N.STOPPED, N.FAILED), False, GangEnd.FAILED),
        ((N.COMPLETED, N.FAILED), False, GangEnd.FAILED),
        ((N.STOPPED, N.LOST), True, GangEnd.FAILED),  # cancelled
        ((N.STOPPED, N.LOST), False, GangEnd.RETRY),  # a worker was lost: nothing failed
        ((N.LOST, N.COMPLETED), False, GangEnd.RETRY),
    ],
)
def test_gang_outcome(statuses: tuple[NodeStatus, ...], cancel: bool, outcome: GangEnd | None) -> None:
    assert gang_outcome(gang(*statuses), cancel) is outcome


def test_spends_retry() -> None:
    assert spends_retry(gang(N.STOPPED, N.LOST))
    interrupted = gang(N.STOPPED, N.LOST)
    interrupted[1].interrupted = True
    assert not spends_retry(interrupted)  # its worker stopped it: not the task's fault
    assert not spends_retry(gang(N.STOPPED) + gang(N.LOST, claimed=False))  # never started


def test_master_port() -> None:
    assert master_port(None) == MASTER_PORT_BASE
    assert master_port(7) == master_port(1007) == MASTER_PORT_BASE + 7


# --- reservations ---------------------------------------------------------------------------


def test_reservation_statuses_are_the_contracts() -> None:
    contract = CONTRACT_SCHEMAS["Reservation"]["properties"]["status"]["enum"]
    assert [s.value for s in ReservationStatus] == contract
