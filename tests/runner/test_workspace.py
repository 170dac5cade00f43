"""prepare_workspace, collect_outputs and SnapshotCache (against a real server)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from fetchml.client import FetchmlClient
from fetchml.client.base import ServerUnreachableError
from fetchml.client.snapshot_pack import pack_directory
from fetchml.core.errors import ValidationError
from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetPolicy
from fetchml.runner.workspace import SnapshotCache, WorkspaceError, collect_outputs, prepare_workspace
from tests.harness import Keys, ServerHandle, free_port


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def packed_project(tmp_path: Path) -> Path:
    src = tmp_path / "project"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('train')\n")
    (src / "pkg" / "model.py").write_text("M = 1\n")
    (src / "here").symlink_to("pkg")
    out = tmp_path / "snap.tar.gz"
    pack_directory(src, out)
    return out


def dataset(
    tmp_path: Path, name: str, data: bytes, mount_path: str | None = None
) -> tuple[DatasetSpec, Path]:
    src = tmp_path / f"{name}.src"
    src.write_bytes(data)
    spec = DatasetSpec(name=name, source=str(src), sha256=sha(data), mount_path=mount_path)
    return spec, DatasetCache(tmp_path / "dscache", DatasetPolicy(roots=(tmp_path,))).fetch(spec)


def test_layout_env_and_datasets(tmp_path: Path) -> None:
    tarball = packed_project(tmp_path)
    mnist = dataset(tmp_path, "mnist", b"mnist bytes")
    cifar = dataset(tmp_path, "cifar", b"cifar bytes", mount_path="data/cifar.tar")
    root = tmp_path / "ws" / "task-1" / "1"
    ws = prepare_workspace(root, snapshot_tarball=tarball, datasets=[mnist, cifar])
    assert (ws.root, ws.snapshot_dir, ws.output_dir) == (root, root / "snapshot", root / "output")
    assert sorted(p.name for p in root.iterdir()) == ["output", "snapshot"]
    assert (ws.snapshot_dir / "train.py").read_text() == "print('train')\n"
    assert (ws.snapshot_dir / "here" / "model.py").read_text() == "M = 1\n"
    assert (ws.snapshot_dir / "datasets" / "mnist").read_bytes() == b"mnist bytes"
    assert (ws.snapshot_dir / "data" / "cifar.tar").read_bytes() == b"cifar bytes"
    for placed in (ws.snapshot_dir / "datasets" / "mnist", ws.snapshot_dir / "data" / "cifar.tar"):
        assert not placed.is_symlink()
    assert ws.output_dir.is_dir() and list(ws.output_dir.iterdir()) == []
    assert ws.env() == {
        "FETCH_ML_SNAPSHOT_DIR": str(root / "snapshot"),
        "FETCHML_OUTPUT_DIR": str(root / "output"),
        "FETCHML_WORKSPACE": str(root),
    }


def test_without_a_snapshot_the_folder_is_empty(tmp_path: Path) -> None:
    ws = prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[])
    assert ws.snapshot_dir.is_dir() and list(ws.snapshot_dir.iterdir()) == []
    assert ws.output_dir.is_dir()


def test_a_workspace_is_staged_only_once(tmp_path: Path) -> None:
    prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[])
    with pytest.raises(WorkspaceError, match="not empty"):
        prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[])


def test_an_unsafe_snapshot_is_not_unpacked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValidationError, match=r"'\.\./\.\./escaped\.txt'"):
        prepare_workspace(tmp_path / "a" / "b" / "ws", snapshot_tarball=bad, datasets=[])
    assert not (tmp_path / "a" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_a_mount_path_may_not_leave_the_workspace(tmp_path: Path) -> None:
    spec, cached = dataset(tmp_path, "d", b"data")
    # The wire model already refuses it; the workspace checks again for specs built otherwise.
    escaping = spec.model_copy(update={"mount_path": "../../outside"})
    with pytest.raises(WorkspaceError, match="stay inside the workspace"):
        prepare_workspace(tmp_path / "ws1", snapshot_tarball=None, datasets=[(escaping, cached)])
    absolute = spec.model_copy(update={"mount_path": "/etc/x"})
    with pytest.raises(WorkspaceError, match="relative path"):
        prepare_workspace(tmp_path / "ws2", snapshot_tarball=None, datasets=[(absolute, cached)])
    assert not (tmp_path / "outside").exists()


def test_a_mount_path_through_a_snapshot_link_that_leaves_is_refused(tmp_path: Path) -> None:
    """A link in the snapshot is checked to stay inside it; a mount below it must stay too."""
    src = tmp_path / "project"
    src.mkdir()
    (src / "train.py").write_text("x")
    (src / "data").symlink_to(".")  # inside: allowed in a snapshot
    out = tmp_path / "snap.tar.gz"
    pack_directory(src, out)
    spec, cached = dataset(tmp_path, "d", b"data", mount_path="data/d.bin")
    ws = prepare_workspace(tmp_path / "ws", snapshot_tarball=out, datasets=[(spec, cached)])
    assert (ws.snapshot_dir / "d.bin").read_bytes() == b"data"  # through the link, still inside
    taken = spec.model_copy(update={"mount_path": "train.py"})
    with pytest.raises(WorkspaceError, match="already taken"):
        prepare_workspace(tmp_path / "ws2", snapshot_tarball=out, datasets=[(taken, cached)])
    # A link planted later (not from the checked tarball) that leads out is still caught.
    ws3 = tmp_path / "ws3"
    (ws3 / "snapshot").mkdir(parents=True)
    outside = tmp_path / "outside_dir"
    outside.mkdir()
    (ws3 / "snapshot" / "evil").symlink_to(outside)
    from fetchml.runner.workspace import _place

    with pytest.raises(WorkspaceError, match="leaves the workspace"):
        _place(spec.model_copy(update={"mount_path": "evil/d.bin"}), cached, ws3 / "snapshot")
    assert list(outside.iterdir()) == []


def test_collect_outputs_lists_regular_files_only(tmp_path: Path) -> None:
    ws = prepare_workspace(tmp_path / "ws", snapshot_tarball=None, datasets=[])
    out = ws.output_dir
    (out / "model.pt").write_bytes(b"w" * 10)
    (out / "logs" / "tb").mkdir(parents=True)
    (out / "logs" / "tb" / "events").write_bytes(b"e" * 3)
    (out / "empty_dir").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    (out / "leak.txt").symlink_to(secret)
    (out / "leakdir").symlink_to(tmp_path)
    os.mkfifo(out / "pipe")
    got = collect_outputs(out)
    assert got == [
        ("logs/tb/events", (out / "logs" / "tb" / "events").absolute(), 3),
        ("model.pt", (out / "model.pt").absolute(), 10),
    ]


def test_snapshot_cache_downloads_once(shared_server: ServerHandle, keys: Keys, tmp_path: Path) -> None:
    tarball = packed_project(tmp_path)
    digest = sha(tarball.read_bytes())
    with shared_server.client(keys.user) as user:
        user.snapshots.upload(digest, tarball)
    cache_dir = tmp_path / "snapcache"
    # An admin key: a worker key may download only the snapshot of an attempt it holds (tested
    # in tests/security/test_api1_object_access.py); this test is about the cache.
    with shared_server.client(keys.admin) as worker:
        got = SnapshotCache(cache_dir, worker).get(digest)
    assert got == cache_dir / f"{digest}.tar.gz"
    assert got.read_bytes() == tarball.read_bytes()
    # Cached: a client that cannot reach any server still gets it.
    with FetchmlClient(f"http://127.0.0.1:{free_port()}", keys.admin, timeout=2) as offline:
        assert SnapshotCache(cache_dir, offline).get(digest) == got
        # A damaged cache entry is not trusted: it is fetched again (here: and fails, offline).
        got.write_bytes(b"damaged")
        with pytest.raises(ServerUnreachableError, match="Cannot reach"):
            SnapshotCache(cache_dir, offline).get(digest)
    assert not got.exists()
    with shared_server.client(keys.admin) as worker:
        assert SnapshotCache(cache_dir, worker).get(digest).read_bytes() == tarball.read_bytes()
        ws = prepare_workspace(tmp_path / "ws", snapshot_tarball=got, datasets=[])
    assert (ws.snapshot_dir / "pkg" / "model.py").read_text() == "M = 1\n"
    with pytest.raises(ValidationError):
        SnapshotCache(cache_dir, FetchmlClient("http://127.0.0.1:1")).get("not-a-digest")
