"""pack_directory: deterministic, honours ignore files, never packs what must not leave the machine."""

from __future__ import annotations

import gzip
import os
import tarfile
import time
from pathlib import Path

import pytest

from fetchml.client.snapshot_pack import pack_directory
from fetchml.host.archive import check_tarball, safe_extract, sha256_file


def write(root: Path, rel: str, data: str = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def names(tgz: Path) -> list[str]:
    with tarfile.open(tgz, "r:gz") as tar:
        return tar.getnames()


def project(root: Path) -> Path:
    write(root, "train.py", "print('train')\n")
    write(root, "src/model.py", "class M: ...\n")
    write(root, "src/util/helpers.py", "def h(): ...\n")
    write(root, "README.md", "# project\n")
    (root / "empty").mkdir()
    return root


def test_the_same_tree_gives_the_same_digest(tmp_path: Path) -> None:
    a = project(tmp_path / "a")
    first = pack_directory(a, tmp_path / "one.tar.gz")
    # Same content, created later, in another order, with other times and modes of the umask.
    b = tmp_path / "b"
    write(b, "README.md", "# project\n")
    (b / "empty").mkdir()
    write(b, "src/util/helpers.py", "def h(): ...\n")
    time.sleep(0.01)
    write(b, "train.py", "print('train')\n")
    write(b, "src/model.py", "class M: ...\n")
    os.utime(b / "train.py", (1_000_000, 1_000_000))
    second = pack_directory(b, tmp_path / "two.tar.gz")
    assert first.sha256 == second.sha256
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    assert first.sha256 == sha256_file(tmp_path / "one.tar.gz")
    assert first.size == (tmp_path / "one.tar.gz").stat().st_size
    assert first.file_count == 4
    # A change of content is a change of digest.
    write(b, "train.py", "print('train!')\n")
    assert pack_directory(b, tmp_path / "three.tar.gz").sha256 != first.sha256


def test_members_are_sorted_and_anonymous(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / "train.py").chmod(0o775)
    out = tmp_path / "p.tar.gz"
    pack_directory(root, out)
    assert names(out) == [
        "README.md",
        "empty",
        "src",
        "src/model.py",
        "src/util",
        "src/util/helpers.py",
        "train.py",
    ]
    with tarfile.open(out, "r:gz") as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", ""), m.name
        assert tar.getmember("train.py").mode == 0o755
        assert tar.getmember("README.md").mode == 0o644
    raw = out.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip mtime is 0"
    assert raw[3] & 0x08 == 0, "no file name in the gzip header"
    assert gzip.decompress(raw)  # a valid gzip stream


def test_gitignore_and_fetchmlignore_nested_and_negated(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    write(root, ".gitignore", "*.log\n!keep.log\nbuild/\n/data\n")
    write(root, "run.log")
    write(root, "keep.log")
    write(root, "src/deep.log")
    write(root, "build/out.o")
    write(root, "src/build/gen.c")  # `build/` matches at any depth
    write(root, "data/big.bin")  # `/data` is anchored at the root ...
    write(root, "src/data/small.csv")  # ... so this one stays
    write(root, ".fetchmlignore", "checkpoints/\n*.ckpt\n!keep.log\n")
    write(root, "checkpoints/epoch1.pt")
    write(root, "model.ckpt")
    # Nested files: relative to their own folder, overriding the shallower ones.
    write(root, "src/.gitignore", "secret.txt\n!deep.log\n")
    write(root, "src/secret.txt")
    write(root, "secret.txt")  # the nested rule does not reach up
    write(root, "src/util/.fetchmlignore", "*.tmp\n")
    write(root, "src/util/a.tmp")
    write(root, "a.tmp")
    # Nothing inside an excluded folder comes back, even with a negation.
    write(root, "build/.gitignore", "!out.o\n")
    out = tmp_path / "p.tar.gz"
    result = pack_directory(root, out)
    got = set(names(out))
    for present in (
        "keep.log",
        "src/deep.log",
        "src/data/small.csv",
        "secret.txt",
        "a.tmp",
        "train.py",
        ".gitignore",
        ".fetchmlignore",
        "src/.gitignore",
    ):
        assert present in got, present
    for absent in (
        "run.log",
        "build",
        "build/out.o",
        "src/build",
        "src/build/gen.c",
        "data",
        "data/big.bin",
        "checkpoints",
        "checkpoints/epoch1.pt",
        "model.ckpt",
        "src/secret.txt",
        "src/util/a.tmp",
    ):
        assert absent not in got, absent
    assert result.skipped == []


def test_fetchmlignore_can_take_back_a_gitignore_exclusion(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    write(root, ".gitignore", "*.yaml\n")
    write(root, ".fetchmlignore", "!config.yaml\n")
    write(root, "config.yaml")
    write(root, "other.yaml")
    out = tmp_path / "p.tar.gz"
    pack_directory(root, out)
    got = set(names(out))
    assert "config.yaml" in got and "other.yaml" not in got


def test_vcs_venv_caches_and_the_output_itself_are_never_packed(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    write(root, ".git/config", "[core]\n")
    write(root, ".venv/bin/python", "")
    write(root, "src/__pycache__/model.cpython-311.pyc", "")
    write(root, "sub/.git", "gitdir: ../.git/modules/sub\n")  # a submodule's .git file
    write(root, ".fetchmlignore", "!.venv\n")  # cannot be talked back in
    out = root / "snap.tar.gz"
    out.write_bytes(b"an older snapshot")
    result = pack_directory(root, out)
    got = names(out)
    assert not [n for n in got if ".git" in n.split("/") or ".venv" in n.split("/")], got
    assert not [n for n in got if "__pycache__" in n], got
    assert "snap.tar.gz" not in got
    assert not [n for n in got if n.endswith(".part")], got
    assert check_tarball(out) == got
    assert result.file_count == 5  # the four project files and .fetchmlignore
    # Packing again over the output gives the same digest: the output never feeds itself.
    assert pack_directory(root, out).sha256 == result.sha256


def test_symlinks_inside_are_kept_outside_are_skipped(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    outside = write(tmp_path, "secret/key.pem", "PRIVATE")
    (root / "alias.py").symlink_to("train.py")
    (root / "src/util/up.py").symlink_to("../model.py")
    (root / "srclink").symlink_to("src")  # a folder link: kept as a link, not followed
    (root / "absolute_inside.py").symlink_to(root / "train.py")  # rewritten relative
    (root / "key.pem").symlink_to(outside)
    (root / "climb").symlink_to("../secret")
    (root / "dangling_out").symlink_to("../../nowhere")
    out = tmp_path / "p.tar.gz"
    result = pack_directory(root, out)
    with tarfile.open(out, "r:gz") as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
        regular = {m.name for m in tar.getmembers() if m.isreg()}
    assert links == {
        "alias.py": "train.py",
        "src/util/up.py": "../model.py",
        "srclink": "src",
        "absolute_inside.py": "train.py",
    }
    assert not [n for n in regular if n.startswith("srclink/")]
    skipped = "\n".join(result.skipped)
    for name in ("key.pem", "climb", "dangling_out"):
        assert name in skipped, result.skipped
    assert len(result.skipped) == 3
    assert "PRIVATE" not in gzip.decompress(out.read_bytes()).decode("latin-1")
    dest = tmp_path / "unpacked"
    safe_extract(out, dest)  # the worker's checks accept what the client packs
    assert (dest / "alias.py").read_text() == "print('train')\n"
    assert (dest / "absolute_inside.py").read_text() == "print('train')\n"


def test_a_folder_over_the_limit_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    write(root, "weights.bin", "w" * 5000)
    out = tmp_path / "p.tar.gz"
    with pytest.raises(ValueError, match=r"more than 4096 bytes.*weights\.bin.*\.fetchmlignore"):
        pack_directory(root, out, max_bytes=4096)
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []
    write(root, ".fetchmlignore", "*.bin\n")
    assert pack_directory(root, out, max_bytes=4096).file_count == 5


def test_special_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    os.mkfifo(root / "pipe")
    out = tmp_path / "p.tar.gz"
    result = pack_directory(root, out)
    assert "pipe" not in names(out)
    assert any("pipe" in w for w in result.skipped)
