"""Host files through datasets (audit finding 1): a task named a host file as its dataset source,
learned the file's digest from the mismatch message, resubmitted with it and got the file
mounted: /etc/shadow, a loopback-only service, /proc/self/environ of the worker.

Now local sources are read only under the roots the worker's operator lists, after resolving
links and `..`; only regular files; and a mismatch never tells the real digest."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from fetchml.cli.embedded import embedded_dataset_roots
from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetError, DatasetPolicy
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import cluster as cluster  # the fixture, for the end-to-end tests

SECRET = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(an allowed root holding data.bin, a secret file outside it)."""
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "data.bin").write_bytes(b"training data")
    secret = tmp_path / "secret" / "shadow"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    return root, secret


def cache(tmp_path: Path, *roots: Path) -> DatasetCache:
    return DatasetCache(tmp_path / "cache", DatasetPolicy(roots=roots))


def test_a_mismatch_never_tells_the_real_digest(tmp_path: Path, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    wrong = sha(b"a guess")
    with pytest.raises(DatasetError) as exc:
        cache(tmp_path, root).fetch(DatasetSpec(name="d", source=str(root / "data.bin"), sha256=wrong))
    assert "does not match the expected sha256" in str(exc.value)
    assert sha(b"training data") not in str(exc.value)


def test_without_roots_no_local_source_is_read(tmp_path: Path, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    for source in (str(root / "data.bin"), (root / "data.bin").as_uri(), "/etc/passwd", "~/.bashrc"):
        with pytest.raises(DatasetError, match="allows no local dataset sources"):
            cache(tmp_path).fetch(DatasetSpec(name="d", source=source, sha256="0" * 64))


@pytest.mark.parametrize("digest_known", [False, True])
def test_files_outside_the_roots_are_refused_whatever_the_digest(
    tmp_path: Path, layout: tuple[Path, Path], digest_known: bool
) -> None:
    root, secret = layout
    (root / "link").symlink_to(secret)
    (root / "sub").mkdir()
    (root / "dirlink").symlink_to(secret.parent)
    digest = sha(SECRET) if digest_known else sha(b"a guess")
    sources = [
        str(secret),
        secret.as_uri(),
        str(root / ".." / "secret" / "shadow"),  # `..` out of the root
        str(root / "sub" / ".." / ".." / "secret" / "shadow"),
        str(root / "link"),  # a link inside the root to a file outside
        str(root / "dirlink" / "shadow"),  # a link to a folder outside
        f"file://localhost{root}/../secret/shadow",
        "/etc/shadow",
        "/proc/self/environ",
    ]
    for source in sources:
        with pytest.raises(DatasetError, match="outside the dataset roots") as exc:
            cache(tmp_path, root).fetch(DatasetSpec(name="d", source=source, sha256=digest))
        assert sha(SECRET) not in str(exc.value)
    assert not (tmp_path / "cache").exists() or not [
        p for p in (tmp_path / "cache").rglob("*") if p.is_file()
    ]


def test_devices_fifos_and_kernel_files_are_refused_even_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    os.mkfifo(root / "pipe")
    everything = cache(tmp_path, Path("/"))
    started = time.monotonic()
    for c, source in [
        (cache(tmp_path, root), str(root / "pipe")),  # opening must not wait for a writer
        (everything, "/dev/urandom"),
        (everything, "/dev/zero"),
        (everything, "/proc/self/environ"),
        (everything, "/proc/1/environ"),
        (everything, "/sys/kernel/mm/transparent_hugepage/enabled"),
    ]:
        with pytest.raises(DatasetError, match="is not a regular file"):
            c.fetch(DatasetSpec(name="d", source=source, sha256="0" * 64))
    assert time.monotonic() - started < 5


def test_a_swap_for_a_link_after_the_check_is_caught_on_the_opened_file(
    tmp_path: Path, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file actually opened must be inside a root, not only the path checked before."""
    root, secret = layout
    (root / "sub").mkdir()
    (root / "sub" / "shadow").write_bytes(b"harmless")
    c = cache(tmp_path, root)
    real_open = os.open

    def swapping_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path) == str(root / "sub" / "shadow"):  # between check and open: swap a folder
            (root / "sub" / "shadow").unlink()
            (root / "sub").rmdir()
            (root / "sub").symlink_to(secret.parent)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swapping_open)
    with pytest.raises(DatasetError, match="outside the dataset roots"):
        c.fetch(DatasetSpec(name="d", source=str(root / "sub" / "shadow"), sha256=sha(SECRET)))


def test_files_inside_the_roots_are_read(tmp_path: Path, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    other = tmp_path / "second-root"
    other.mkdir()
    (other / "x.bin").write_bytes(b"x")
    c = cache(tmp_path, root, other)
    got = c.fetch(DatasetSpec(name="d", source=str(root / "data.bin"), sha256=sha(b"training data")))
    assert got.read_bytes() == b"training data"
    assert (
        c.fetch(DatasetSpec(name="x", source=(other / "x.bin").as_uri(), sha256=sha(b"x"))).read_bytes()
        == b"x"
    )


def test_the_embedded_worker_default_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FETCHML_DATASET_ROOTS", raising=False)
    assert embedded_dataset_roots("127.0.0.1") == (Path.home(),)
    assert embedded_dataset_roots("localhost") == (Path.home(),)
    assert embedded_dataset_roots("::1") == (Path.home(),)
    assert embedded_dataset_roots("0.0.0.0") == ()
    assert embedded_dataset_roots("10.1.2.3") == ()
    monkeypatch.setenv("FETCHML_DATASET_ROOTS", f"{tmp_path}{os.pathsep}/srv/data")
    assert embedded_dataset_roots("0.0.0.0") == (tmp_path, Path("/srv/data"))
    monkeypatch.setenv("FETCHML_DATASET_ROOTS", "")
    assert embedded_dataset_roots("127.0.0.1") == ()


# -- end to end: a real `fetchml worker --executor local` ----------------------------------------


def test_a_worker_never_mounts_host_files_nor_tells_their_digest(
    cluster: Cluster, tmp_path: Path, layout: tuple[Path, Path]
) -> None:
    root, secret = layout
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(root))
    shadow = Path("/etc/shadow")
    targets = [str(secret), str(root / ".." / "secret" / "shadow"), "/proc/self/environ"]
    real: dict[str, str] = {str(secret): sha(SECRET)}
    if os.access(shadow, os.R_OK):
        targets.append(str(shadow))
        real[str(shadow)] = sha(shadow.read_bytes())
    (root / "escape").symlink_to(secret)
    targets.append(str(root / "escape"))
    real[str(root / "escape")] = sha(SECRET)

    def run(source: str, digest: str) -> dict[str, object]:
        tid = cluster.submit(
            entrypoint="cat d.bin",
            dataset_specs=[{"name": "d", "source": source, "sha256": digest, "mount_path": "d.bin"}],
        )
        t = cluster.wait_status(tid, "completed", "failed")
        assert t["status"] == "failed", t
        assert cluster.logs(tid) == []
        return t

    for source in targets:
        t = run(source, sha(b"a guess"))
        assert "outside the dataset roots" in str(t["error"]), t
        for digest in real.values():
            assert digest not in str(t["error"]), t
        if source in real:  # with the real digest: still refused
            t = run(source, real[source])
            assert "outside the dataset roots" in str(t["error"]), t
    # A file the task may read: a wrong digest says so, without telling the right one.
    t = run(str(root / "data.bin"), sha(b"a guess"))
    assert "does not match the expected sha256" in str(t["error"]), t
    assert sha(b"training data") not in str(t["error"])
    ok = cluster.submit(
        entrypoint="cat d.bin",
        dataset_specs=[
            {
                "name": "d",
                "source": str(root / "data.bin"),
                "sha256": sha(b"training data"),
                "mount_path": "d.bin",
            }
        ],
    )
    assert cluster.wait_status(ok, "completed", "failed")["status"] == "completed"
    assert cluster.logs(ok) == ["training data"]


def test_a_worker_without_roots_reads_no_local_source(cluster: Cluster, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    cluster.start_worker("w1", "--executor", "local")
    tid = cluster.submit(
        entrypoint="cat d.bin",
        dataset_specs=[
            {
                "name": "d",
                "source": str(root / "data.bin"),
                "sha256": sha(b"training data"),
                "mount_path": "d.bin",
            }
        ],
    )
    t = cluster.wait_status(tid, "completed", "failed")
    assert t["status"] == "failed" and "allows no local dataset sources" in t["error"], t


def test_a_fifo_source_does_not_hang_the_worker(cluster: Cluster, layout: tuple[Path, Path]) -> None:
    root, _ = layout
    os.mkfifo(root / "pipe")
    cluster.start_worker("w1", "--executor", "local", "--dataset-root", str(root))
    tid = cluster.submit(
        entrypoint="true",
        dataset_specs=[{"name": "d", "source": str(root / "pipe"), "sha256": "0" * 64}],
    )
    t = cluster.wait_status(tid, "completed", "failed", timeout=20)
    assert t["status"] == "failed" and "not a regular file" in t["error"], t
