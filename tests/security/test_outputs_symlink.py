"""API8 finding 2: host folders through outputs. A Docker task (root in its container) replaced
/workspace/output with a link to a host folder and the worker uploaded that folder as the task's
artifacts. Collection now never follows a link: the output folder itself, any folder below it
and every file are opened by descriptor with O_NOFOLLOW, so a swap between listing and reading
is refused too.

Unit tests drive fetchml.runner.workspace directly (the swaps are made between the listing and
the opening); the end-to-end tests run a real server and a real `fetchml worker --executor
docker`."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fetchml.runner.workspace import (
    OUTPUT_REPLACED,
    OutputError,
    collect_outputs,
    open_output,
    prepare_workspace,
    scan_outputs,
)
from tests.backends import SQLITE
from tests.dockerutil import TEST_IMAGE, docker_client
from tests.e2e.conftest import Cluster, cluster

__all__ = ["cluster", "docker_client"]

MARKER = "host-secret-marker-7f3a"


@pytest.fixture(scope="module")
def backend() -> str:
    """The worker's collection does not depend on the database: SQLite only."""
    return SQLITE


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host folder outside every workspace, holding a marker the task must never get out."""
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "secret.txt").write_text(MARKER)
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.txt").write_text(MARKER)
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[]).output_dir


def read(output_dir: Path, rel: str) -> bytes:
    with open_output(output_dir, rel) as fh:
        return fh.read()


def in_time(fn: Any, timeout: float = 5) -> Any:
    """fn() in a thread: a fifo opened for reading must not block collection."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked (a fifo opened without O_NONBLOCK?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


# -- the output folder itself --------------------------------------------------------------------


def test_an_output_folder_replaced_by_a_link_is_not_collected(out: Path, host: Path) -> None:
    out.rmdir()
    out.symlink_to(host)
    with pytest.raises(OutputError) as err:
        collect_outputs(out)
    assert str(err.value) == OUTPUT_REPLACED == "output folder was replaced by a link; nothing collected"
    with pytest.raises(OutputError, match="replaced by a link"):
        scan_outputs(out)
    with pytest.raises(OutputError, match="replaced by a link"):
        read(out, "secret.txt")


def test_an_output_folder_replaced_by_a_file_or_fifo_is_not_collected(out: Path) -> None:
    out.rmdir()
    out.write_text(MARKER)
    with pytest.raises(OutputError, match="not a folder"):
        collect_outputs(out)
    out.unlink()
    os.mkfifo(out)
    with pytest.raises(OutputError, match="not a folder"):
        in_time(lambda: collect_outputs(out))


def test_a_missing_output_folder_is_nothing_to_collect(out: Path) -> None:
    out.rmdir()
    assert collect_outputs(out) == []


# -- inside the output folder --------------------------------------------------------------------


def test_links_fifos_and_linked_folders_inside_are_left_out(out: Path, host: Path) -> None:
    (out / "model.pt").write_bytes(b"w" * 4)
    (out / "logs").mkdir()
    (out / "logs" / "events").write_bytes(b"e")
    (out / "leak.txt").symlink_to(host / "secret.txt")
    (out / "leakdir").symlink_to(host)
    (out / "logs" / "up").symlink_to("../..")  # a relative link out of the folder
    os.mkfifo(out / "pipe")
    found, skipped = in_time(lambda: scan_outputs(out))
    assert found == [("logs/events", 1), ("model.pt", 4)]
    assert skipped == ["leak.txt", "leakdir", "logs/up", "pipe"]
    assert [rel for rel, _, _ in collect_outputs(out)] == ["logs/events", "model.pt"]
    assert read(out, "logs/events") == b"e"
    for rel in ("leak.txt", "leakdir/secret.txt", "logs/up/host/secret.txt", "pipe"):
        with pytest.raises(OutputError):
            in_time(lambda rel=rel: read(out, rel))


def test_a_file_swapped_for_a_link_after_listing_is_refused(out: Path, host: Path) -> None:
    (out / "result.txt").write_text("mine")
    found, _ = scan_outputs(out)
    assert found == [("result.txt", 4)]
    # The task (or anything still running in its workspace) swaps the file for a link.
    tmp = out / ".swap"
    tmp.symlink_to(host / "secret.txt")
    os.replace(tmp, out / "result.txt")
    with pytest.raises(OutputError, match=r"result\.txt"):
        read(out, "result.txt")


def test_a_file_swapped_for_a_fifo_after_listing_is_refused_without_blocking(out: Path) -> None:
    (out / "result.txt").write_text("mine")
    scan_outputs(out)
    (out / "result.txt").unlink()
    os.mkfifo(out / "result.txt")
    with pytest.raises(OutputError, match=r"result\.txt"):
        in_time(lambda: read(out, "result.txt"))


def test_a_parent_folder_swapped_for_a_link_after_listing_is_refused(out: Path, host: Path) -> None:
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("mine")
    found, _ = scan_outputs(out)
    assert found == [("sub/deep.txt", 4)]
    os.rename(out / "sub", out / "old")
    (out / "sub").symlink_to(host / "sub")  # host/sub/deep.txt holds the marker
    with pytest.raises(OutputError, match=r"sub/deep\.txt"):
        read(out, "sub/deep.txt")


def test_the_output_folder_swapped_for_a_link_after_listing_is_refused(out: Path, host: Path) -> None:
    (out / "secret.txt").write_text("mine")
    found, _ = scan_outputs(out)
    assert found == [("secret.txt", 4)]
    os.rename(out, out.with_name("old-output"))
    out.symlink_to(host)
    with pytest.raises(OutputError, match="replaced by a link"):
        read(out, "secret.txt")


def test_a_file_is_read_through_the_descriptor_it_was_opened_by(out: Path, host: Path) -> None:
    """Swapping the path after opening changes nothing: the upload streams the opened file."""
    (out / "result.txt").write_text("mine")
    with open_output(out, "result.txt") as fh:
        tmp = out / ".swap"
        tmp.symlink_to(host / "secret.txt")
        os.replace(tmp, out / "result.txt")
        assert fh.read() == b"mine"


@pytest.mark.parametrize("rel", ["../ws/output/x", "a/../x", "/etc/passwd", "", "a//b"])
def test_only_plain_relative_paths_are_opened(out: Path, rel: str) -> None:
    with pytest.raises(OutputError, match="plain relative path"):
        read(out, rel)


# -- end to end: a real server and a real docker worker ------------------------------------------


@pytest.fixture
def docker_cluster(cluster: Cluster, docker_client: Any) -> Cluster:
    cluster.start_worker("dw", "--executor", "docker", "--default-image", TEST_IMAGE)
    return cluster


def artifacts(c: Cluster, task_id: str) -> list[dict[str, Any]]:
    with c.server.http(c.admin) as http:
        r = http.get(f"/v1/tasks/{task_id}/artifacts")
        assert r.status_code == 200, r.text
        return list(r.json())


def artifact_bodies(c: Cluster, task_id: str) -> list[bytes]:
    bodies = []
    with c.server.http(c.admin) as http:
        for a in artifacts(c, task_id):
            r = http.get(f"/v1/tasks/{task_id}/artifacts/{a['path']}")
            assert r.status_code == 200, r.text
            bodies.append(r.content)
    return bodies


@pytest.mark.docker
def test_a_task_that_links_its_output_folder_to_the_host_uploads_nothing(
    docker_cluster: Cluster, host: Path
) -> None:
    c = docker_cluster
    tid = c.submit(
        entrypoint=f'sh -c \'rm -rf "$FETCHML_OUTPUT_DIR" && busybox ln -s {host} "$FETCHML_OUTPUT_DIR"\''
    )
    t = c.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "failed", t
    assert t["error"] == "output folder was replaced by a link; nothing collected"
    assert artifacts(c, tid) == []
    assert (host / "secret.txt").read_text() == MARKER  # the workspace's removal left it alone
    assert "replaced by a link" in c.worker_log("dw")


@pytest.mark.docker
def test_links_inside_the_output_folder_are_left_out(docker_cluster: Cluster, host: Path) -> None:
    c = docker_cluster
    script = (
        'echo fine > "$FETCHML_OUTPUT_DIR/ok.txt"'
        f' && busybox ln -s {host}/secret.txt "$FETCHML_OUTPUT_DIR/leak.txt"'
        f' && busybox ln -s {host} "$FETCHML_OUTPUT_DIR/leakdir"'
    )
    tid = c.submit(entrypoint=f"sh -c '{script}'")
    t = c.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "completed", t
    assert [a["path"] for a in artifacts(c, tid)] == ["ok.txt"]
    assert not any(MARKER.encode() in body for body in artifact_bodies(c, tid))
    assert "not collected" in (t.get("output") or "") and "leak.txt" in t["output"]
