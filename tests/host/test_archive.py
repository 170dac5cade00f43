"""Hostile tarballs are refused with the member named; a good one unpacks."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from fetchml.core.errors import ValidationError
from fetchml.host.archive import check_tarball, safe_extract, sha256_file


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def make_tar(path: Path, *members: tuple) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


GOOD = (
    member("src", tarfile.DIRTYPE),
    member("src/train.py", data=b"print('hi')\n"),
    member("src/pkg", tarfile.DIRTYPE),
    member("src/pkg/__init__.py", data=b""),
    member("src/alias.py", tarfile.SYMTYPE, linkname="train.py"),
    member("src/pkg/up.py", tarfile.SYMTYPE, linkname="../train.py"),
    member("src/copy.py", tarfile.LNKTYPE, linkname="src/train.py"),
    member("README", data=b"readme"),
)


def test_a_good_tarball_is_listed_and_extracts(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "good.tar.gz", *GOOD)
    assert check_tarball(tgz) == [info.name for info, _ in GOOD]
    dest = tmp_path / "out"
    safe_extract(tgz, dest)
    assert (dest / "src/train.py").read_bytes() == b"print('hi')\n"
    assert os.readlink(dest / "src/alias.py") == "train.py"
    assert (dest / "src/pkg/up.py").read_bytes() == b"print('hi')\n"
    assert (dest / "src/copy.py").read_bytes() == b"print('hi')\n"
    assert (dest / "README").read_bytes() == b"readme"


def test_a_file_object_is_checked_too(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "good.tar.gz", *GOOD)
    with tgz.open("rb") as fh:
        assert len(check_tarball(fh)) == len(GOOD)

    class Stream(io.RawIOBase):  # not seekable: checked in one pass
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            chunk = self.inner.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    assert len(check_tarball(io.BufferedReader(Stream(tgz.read_bytes())))) == len(GOOD)
    bad = make_tar(tmp_path / "bad.tar.gz", member("../x", data=b"x"))
    with pytest.raises(ValidationError, match=r"'\.\./x'"):
        check_tarball(io.BufferedReader(Stream(bad.read_bytes())))


BAD = {
    "parent component": ([member("../x", data=b"x")], "../x", "'..' component"),
    "nested parent component": ([member("a/../../x", data=b"x")], "a/../../x", "'..' component"),
    "absolute path": ([member("/etc/x", data=b"x")], "/etc/x", "absolute path"),
    "symlink to /etc/passwd": (
        [member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")],
        "passwd",
        "absolute",
    ),
    "symlink climbing out": (
        [member("a", tarfile.DIRTYPE), member("a/l", tarfile.SYMTYPE, linkname="../../x")],
        "a/l",
        "outside the tree",
    ),
    "symlink chain climbing out": (
        [
            member("here", tarfile.SYMTYPE, linkname="."),
            member("sneaky", tarfile.SYMTYPE, linkname="here/.."),
        ],
        "sneaky",
        "outside the tree",
    ),
    "file written through a symlink": (
        [member("d", tarfile.SYMTYPE, linkname="."), member("d/x", data=b"x")],
        "d/x",
        "beneath the symbolic link",
    ),
    "hardlink escaping": (
        [member("h", tarfile.LNKTYPE, linkname="../../etc/passwd")],
        "h",
        "leaves the tree",
    ),
    "hardlink to an absolute path": (
        [member("h", tarfile.LNKTYPE, linkname="/etc/passwd")],
        "h",
        "absolute",
    ),
    "hardlink to a symlink": (
        [member("s", tarfile.SYMTYPE, linkname="x"), member("h", tarfile.LNKTYPE, linkname="s")],
        "h",
        "not an earlier regular file",
    ),
    "character device": ([member("null", tarfile.CHRTYPE)], "null", "device node"),
    "block device": ([member("sda", tarfile.BLKTYPE)], "sda", "device node"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "pipe", "FIFO"),
    "duplicate": ([member("x", data=b"1"), member("x", data=b"2")], "x", "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsafe_members_are_refused_by_name(tmp_path: Path, case: str) -> None:
    members, name, why = BAD[case]
    tgz = make_tar(tmp_path / "bad.tar.gz", member("ok.txt", data=b"fine"), *members)
    with pytest.raises(ValidationError) as exc:
        check_tarball(tgz)
    assert repr(name) in exc.value.message, exc.value.message
    assert why in exc.value.message, exc.value.message
    dest = tmp_path / "out"
    with pytest.raises(ValidationError):
        safe_extract(tgz, dest)
    assert list(dest.iterdir()) == [], "nothing is unpacked from a refused tarball"


def test_too_many_members_is_a_bomb(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "many.tar.gz", *(member(f"f{i}", data=b"") for i in range(11)))
    assert len(check_tarball(tgz, max_members=11)) == 11
    with pytest.raises(ValidationError, match=r"'f10'.*more than 10 members"):
        check_tarball(tgz, max_members=10)


def test_too_many_bytes_unpacked_is_a_bomb(tmp_path: Path) -> None:
    zeros = b"\0" * 600_000
    tgz = make_tar(tmp_path / "big.tar.gz", member("a", data=zeros), member("b", data=zeros))
    assert tgz.stat().st_size < 10_000  # compresses to almost nothing: the classic bomb
    assert check_tarball(tgz, max_total_bytes=1_200_000) == ["a", "b"]
    with pytest.raises(ValidationError, match=r"'b'.*more than 1000000 bytes"):
        check_tarball(tgz, max_total_bytes=1_000_000)
    with pytest.raises(ValidationError):
        safe_extract(tgz, tmp_path / "out", max_total_bytes=1_000_000)
    assert not (tmp_path / "out" / "a").exists()


def test_garbage_is_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(ValidationError, match="not a readable tar archive"):
        check_tarball(junk)


def test_extract_drops_setuid_and_world_write(tmp_path: Path) -> None:
    info, data = member("tool", data=b"#!/bin/sh\n")
    info.mode = 0o6777
    tgz = make_tar(tmp_path / "suid.tar.gz", (info, data))
    safe_extract(tgz, tmp_path / "out")
    mode = (tmp_path / "out" / "tool").stat().st_mode & 0o7777
    assert mode & 0o6000 == 0 and mode & 0o002 == 0, oct(mode)


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(f) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
