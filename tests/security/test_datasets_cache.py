"""The shared dataset cache (audit finding 5): (a) it was keyed by sha256 alone, so naming someone
else's digest with a made-up source was a cache hit that handed over their data; (b) entries were
hard-linked into workspaces, so a task rewrote a cached file in place and the next user's task got
the changed data despite its pinned digest (the stamp, size and mtime, could be forged).

Now entries are keyed by (vetted source, digest), tasks get a private copy (local executor), a
read-only bind mount (Docker) or a link they cannot write (tasks run as another user), and the
stamp includes the inode's ctime, which no task can set back."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetError, DatasetPolicy, copy_verified
from fetchml.runner.workspace import prepare_workspace
from tests.dockerutil import TEST_IMAGE
from tests.dockerutil import docker_client as docker_client  # the fixture, for the Docker test
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import cluster as cluster  # the fixture, for the end-to-end tests

DATA = b"training data"  # 13 bytes
POISON = b"POISONED-DATA"  # as long: a change the old size+mtime stamp could not see


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "allowed"
    r.mkdir()
    (r / "data.bin").write_bytes(DATA)
    return r


def spec(source: str | Path, digest: str = sha(DATA), name: str = "d") -> DatasetSpec:
    return DatasetSpec(name=name, source=str(source), sha256=digest, mount_path="d.bin")


def rewrite_keeping_mtime(path: Path, data: bytes) -> None:
    """What a task could do through a hard link: same size, mtime set back."""
    st = path.stat()
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(0o444)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


# -- (a) a digest alone opens nothing ----------------------------------------------------------


def test_a_made_up_source_with_a_cached_digest_misses(tmp_path: Path, root: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(root,)))
    cache.fetch(spec(root / "data.bin"))  # user A's dataset, now cached
    for source, why in [
        (tmp_path / "made-up.bin", "outside the dataset roots"),
        (root / "made-up.bin", "not found"),
        ("http://127.0.0.1:1/made-up.bin", "only from public addresses"),
    ]:
        with pytest.raises(DatasetError, match=why):
            cache.fetch(spec(source))
    # Another user naming the same allowed source gets the same entry: they could read it anyway.
    assert cache.fetch(spec(root / "data.bin", name="b")).read_bytes() == DATA


# -- (b) a poisoned entry is caught; tasks cannot write the entry --------------------------------


def test_an_entry_rewritten_with_its_mtime_set_back_is_detected(tmp_path: Path, root: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(root,)))
    cached = cache.fetch(spec(root / "data.bin"))
    rewrite_keeping_mtime(cached, POISON)
    got = cache.fetch(spec(root / "data.bin"))
    assert got.read_bytes() == DATA
    # With the source gone, a poisoned entry fails the task rather than reaching it.
    rewrite_keeping_mtime(got, POISON)
    (root / "data.bin").unlink()
    with pytest.raises(DatasetError, match="not found"):
        cache.fetch(spec(root / "data.bin"))


def test_the_local_executor_gets_a_private_copy(tmp_path: Path, root: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(root,)))
    s = spec(root / "data.bin")
    cached = cache.fetch(s)
    ws = prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[(s, cached)])
    placed = ws.snapshot_dir / "d.bin"
    assert placed.read_bytes() == DATA and not placed.samefile(cached)
    assert placed.stat().st_mode & 0o777 == 0o444 and ws.readonly_mounts == ()
    placed.chmod(0o644)
    placed.write_bytes(POISON)  # the task's own copy: its business
    assert cached.read_bytes() == DATA


def test_a_copy_of_an_entry_changed_meanwhile_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "entry"
    src.write_bytes(POISON)
    with pytest.raises(DatasetError, match="changed while it was being copied"):
        copy_verified(src, tmp_path / "dst", sha(DATA))
    assert not (tmp_path / "dst").exists()


def test_docker_gets_a_placeholder_and_a_read_only_mount(tmp_path: Path, root: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(root,)))
    s = spec(root / "data.bin")
    cached = cache.fetch(s)
    ws = prepare_workspace(
        tmp_path / "ws", snapshot_tarball=None, datasets=[(s, cached)], mount_datasets=True
    )
    assert ws.readonly_mounts == ((cached, "d.bin"),)
    placeholder = ws.snapshot_dir / "d.bin"
    assert placeholder.read_bytes() == b"" and not placeholder.samefile(cached)


@pytest.mark.skipif(os.geteuid() != 0, reason="tasks run as another user only under a root worker")
def test_a_link_for_a_task_of_another_user_cannot_be_written_by_it(tmp_path: Path, root: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(root,)))
    s = spec(root / "data.bin")
    cached = cache.fetch(s)
    nobody = (65534, 65534)
    # A workspace the task's user can reach, as the worker's workspaces folder is (0711).
    base = Path(tempfile.mkdtemp(prefix="fetchml-ws-"))
    try:
        base.chmod(0o711)
        ws = prepare_workspace(base / "ws", snapshot_tarball=None, datasets=[(s, cached)], owner=nobody)
        placed = ws.snapshot_dir / "d.bin"
        assert placed.samefile(cached) and placed.stat().st_uid == 0
        script = 'cat "$1"; echo; chmod 666 "$1" 2>/dev/null; (printf X > "$1") 2>/dev/null && echo wrote || echo refused'
        out = subprocess.run(
            ["/bin/sh", "-c", script, "sh", str(placed)],
            user=nobody[0],
            group=nobody[1],
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.stdout.split() == [DATA.decode().split()[0], DATA.decode().split()[1], "refused"], out
    finally:
        shutil.rmtree(base)
    assert cached.read_bytes() == DATA
    # The link changed the entry's ctime; it was stamped again, so it is not hashed again.
    assert cache._hit(s.sha256, cached)


# -- end to end: real workers ------------------------------------------------------------------


def submit_as(cluster: Cluster, key: str, **body: Any) -> str:
    body.setdefault("job_name", "e2e")
    with cluster.server.http(key) as http:
        r = http.post("/v1/tasks", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_another_user_cannot_take_a_cached_dataset_by_its_digest(
    cluster: Cluster, tmp_path: Path, root: Path
) -> None:
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(root))
    a = cluster.submit(entrypoint="cat d.bin", dataset_specs=[spec(root / "data.bin").model_dump()])
    assert cluster.wait_status(a, "completed", "failed")["status"] == "completed"
    assert cluster.logs(a) == [DATA.decode()]
    bob = cluster.server.make_key("bob", "user")
    for made_up, why in [
        (tmp_path / "made-up.bin", "outside the dataset roots"),
        (root / "made-up.bin", "not found"),
        ("http://127.0.0.1:1/made-up.bin", "only from public addresses"),
    ]:
        b = submit_as(cluster, bob, entrypoint="cat d.bin", dataset_specs=[spec(made_up).model_dump()])
        t = cluster.wait_status(b, "completed", "failed")
        assert t["status"] == "failed" and why in t["error"], t
        assert cluster.logs(b) == []


def test_a_task_that_rewrites_its_dataset_does_not_change_the_next_tasks(
    cluster: Cluster, tmp_path: Path, root: Path
) -> None:
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(root))
    d = [spec(root / "data.bin").model_dump()]
    # Same length, mtime set back: what the old (size, mtime) stamp could not notice.
    evil = cluster.submit(
        entrypoint="sh -c 'cp -p d.bin .ref; chmod u+w d.bin; printf POISONED-DATA > d.bin; "
        "touch -r .ref d.bin; cat d.bin; echo'",
        dataset_specs=d,
    )
    assert cluster.wait_status(evil, "completed", "failed")["status"] == "completed"
    assert cluster.logs(evil) == [POISON.decode()]  # it changed its own copy
    victim = cluster.submit(entrypoint="cat d.bin", dataset_specs=d)
    assert cluster.wait_status(victim, "completed", "failed")["status"] == "completed"
    assert cluster.logs(victim) == [DATA.decode()]
    # Rewriting the cache entry itself (as a process of the worker's own uid could) is caught by
    # the stamp's ctime: the next task gets the right bytes again.
    entries = [p for p in (tmp_path / "work-w1" / "datasets").rglob(sha(DATA))]
    assert len(entries) == 1
    rewrite_keeping_mtime(entries[0], POISON)
    again = cluster.submit(entrypoint="cat d.bin", dataset_specs=d)
    assert cluster.wait_status(again, "completed", "failed")["status"] == "completed"
    assert cluster.logs(again) == [DATA.decode()]


@pytest.mark.docker
def test_in_docker_the_dataset_is_mounted_read_only(
    cluster: Cluster, docker_client: Any, tmp_path: Path, root: Path
) -> None:
    cluster.start_worker(
        "dw", "--executor", "docker", "--default-image", TEST_IMAGE, "--dataset-root", str(root)
    )
    d = [spec(root / "data.bin").model_dump()]
    evil = cluster.submit(
        entrypoint="sh -c 'cat d.bin; echo; (printf POISONED-DATA > d.bin) 2>/dev/null && echo wrote || "
        "echo refused; (rm -f d.bin) 2>/dev/null; cat d.bin; echo'",
        dataset_specs=d,
    )
    t = cluster.wait_status(evil, "completed", "failed", timeout=60)
    assert t["status"] == "completed", t
    assert cluster.logs(evil) == [DATA.decode(), "refused", DATA.decode()]
    victim = cluster.submit(entrypoint="cat d.bin", dataset_specs=d)
    assert cluster.wait_status(victim, "completed", "failed", timeout=60)["status"] == "completed"
    assert cluster.logs(victim) == [DATA.decode()]
