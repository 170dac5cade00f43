"""The Services pane's model and poll thread, without Textual (the pane itself is driven in
tests/tui/test_app.py)."""

from __future__ import annotations

from fetchml.client import FetchmlClient
from fetchml.core.jupyter import StartJupyterRequest
from fetchml.tui.feed import Failure
from fetchml.tui.sample import NOW, demo_services, service
from fetchml.tui.services import ENDED_SHOWN, ServiceList, ServicesPoll, ServicesView, stop_question
from fetchml.tui.state import USER, Viewer
from tests.cli.conftest import unreachable_url
from tests.harness import Keys, ServerHandle
from tests.tui.poll_kit import collect


def test_live_services_come_first_then_the_latest_ended() -> None:
    items = [
        service("a" * 32, "old-run", "u", ago=900),
        service("b" * 32, "new-run", "u", ago=10),
        service("c" * 32, "queued", "u", status="starting", ago=5),
        service("d" * 32, "going", "u", status="stopping", ago=1),
        *[
            service(f"{i:032x}", f"done-{i}", "u", status="stopped", ago=1000 + i)
            for i in range(ENDED_SHOWN + 5)
        ],
    ]
    view = ServicesView(items)
    assert view.ids[:4] == ["b" * 32, "a" * 32, "c" * 32, "d" * 32]
    ended = view.ids[4:]
    assert len(ended) == ENDED_SHOWN and ended[0] == f"{0:032x}"  # newest first, capped
    assert view.load(items) is False  # the same list: nothing to repaint
    assert view.load(items[:1]) is True and view.ids == ["a" * 32]
    assert view.load(None) is True and not view.available and view.ids == []


def test_cells_and_details() -> None:
    view = ServicesView(demo_services())
    running, starting, failed = view.ids
    assert view.cells(running, NOW)[:7] == [running[:8], "alice-scratch", "alice", ("running", "green"),
                                            "gpu-box-1", "1", "1h02m"]  # fmt: skip
    assert view.cells(starting, NOW)[7] == (
        "waiting for a service slot: no active worker has 2 free GPUs",
        "",
    )
    assert view.cells(failed, NOW)[6] == "50s"  # how long it lasted
    assert view.cells(failed, NOW)[7] == ("jupyter exited with code 1 before it answered", "red")
    text = view.detail(failed, None).plain
    assert "error: jupyter exited" in text and "No module named 'jupyter_server'" in text
    text = view.detail(running, "http://head:9101").plain
    assert f"proxy http://head:9101/v1/jupyter/services/{running}/proxy/" in text
    assert f"fetchml jupyter open {running}" in text
    assert "Highlight a service" in view.detail(None, None).plain
    assert [s["user_id"] for s in demo_services(Viewer(USER, "bob"))] == ["bob"]


def test_stop_question() -> None:
    running, starting, failed = demo_services()
    assert stop_question(running) == (
        f"Stop Jupyter service {running['id']} (alice-scratch, running on gpu-box-1, alice)?",
        True,
    )
    assert stop_question(starting)[1] is True
    assert stop_question(failed) == (f"Service {failed['id'][:8]} has ended (error).", False)



def test_the_poll_reads_the_list_again_and_again(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.client(keys.user) as c:
        svc = c.jupyter.start(StartJupyterRequest(name="polled", gpu=1, gpu_type="NOSUCHGPU"))
        got: list[object] = []
        poll = ServicesPoll(c, got.append, every=0.05)
        collect(poll, got, 3)
        c.jupyter.stop(svc.id)
    assert len(got) >= 3 and all(isinstance(g, ServiceList) for g in got)
    first = got[0]
    assert isinstance(first, ServiceList) and first.services is not None
    assert svc.id in {s["id"] for s in first.services}


def test_the_poll_is_silent_while_no_server_answers() -> None:
    got: list[object] = []
    with FetchmlClient(unreachable_url(), "fml_x", timeout=1) as c:
        poll = ServicesPoll(c, got.append, every=0.05)
        collect(poll, got, 1, timeout=1.0)
    assert not [g for g in got if isinstance(g, Failure)]  # the status bar says it, not a toast
