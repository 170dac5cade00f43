"""AtomicHashedWriter: a file is placed whole with the digest it was promised, or not at all."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from pathlib import Path

import pytest

from fetchml.host.archive import sha256_file
from fetchml.host.files import (
    AtomicHashedWriter,
    DigestMismatchError,
    FileTooLargeError,
    HashCounter,
    TooLarge,
)

DATA = [b"alpha " * 1000, b"", b"beta " * 3000, b"gamma"]
SHA = hashlib.sha256(b"".join(DATA)).hexdigest()
SIZE = sum(len(c) for c in DATA)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class Boom(Exception):
    pass


def test_a_matching_digest_places_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with AtomicHashedWriter(dest, expected_sha256=SHA, limit=SIZE) as out:
        assert out.tmp.parent == tmp_path and out.tmp.name.startswith(".out.bin.")
        assert out.tmp.name.endswith(".part")
        for chunk in DATA:
            assert out.write(chunk) == len(chunk)
        assert not dest.exists()  # nothing at the destination before the commit
        assert out.commit() == dest
    assert dest.read_bytes() == b"".join(DATA)
    assert (out.size, out.sha256) == (SIZE, SHA)
    assert listing(tmp_path) == ["out.bin"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600  # mkstemp's, unless `mode` says otherwise


def test_a_digest_mismatch_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with (
        pytest.raises(DigestMismatchError, match=SHA),
        AtomicHashedWriter(dest, expected_sha256="0" * 64) as out,
    ):
        out.writelines(DATA)
        out.commit()
    assert listing(tmp_path) == []


def test_the_callers_mismatch_error_gets_the_digest_found(tmp_path: Path) -> None:
    found: list[str] = []

    def mismatch(digest: str) -> Exception:
        found.append(digest)
        return Boom(f"got {digest}")

    with (
        pytest.raises(Boom, match=f"got {SHA}"),
        AtomicHashedWriter(tmp_path / "x", expected_sha256="f" * 64, mismatch=mismatch) as out,
    ):
        out.writelines(DATA)
        out.commit()
    assert found == [SHA]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("too_large", [None, lambda: Boom("too big")])
def test_passing_the_limit_leaves_nothing(tmp_path: Path, too_large: TooLarge | None) -> None:
    dest = tmp_path / "out.bin"
    expected = FileTooLargeError if too_large is None else Boom
    with pytest.raises(expected), AtomicHashedWriter(dest, limit=SIZE - 1, too_large=too_large) as out:
        out.writelines(DATA)
        out.commit()
    assert listing(tmp_path) == []
    # The chunk that passed the limit was neither hashed nor written.
    assert out.size == SIZE and out.sha256 == hashlib.sha256(b"".join(DATA[:-1])).hexdigest()


def test_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    with AtomicHashedWriter(tmp_path / "out.bin", limit=SIZE, expected_sha256=SHA) as out:
        out.writelines(DATA)
        out.commit()
    assert sha256_file(tmp_path / "out.bin") == SHA


def test_a_failure_midway_leaves_the_old_destination_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"the old file")
    with pytest.raises(Boom), AtomicHashedWriter(dest) as out:
        out.write(DATA[0])
        raise Boom("the stream broke")
    assert dest.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["out.bin"]


def test_a_refused_file_leaves_the_old_destination_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"the old file")
    with pytest.raises(DigestMismatchError), AtomicHashedWriter(dest, expected_sha256="0" * 64) as out:
        out.writelines(DATA)
        out.commit()
    assert dest.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["out.bin"]


def test_a_commit_replaces_the_old_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"the old file")
    with AtomicHashedWriter(dest, expected_sha256=SHA) as out:
        out.writelines(DATA)
        out.commit()
    assert sha256_file(dest) == SHA
    assert listing(tmp_path) == ["out.bin"]


def test_the_check_sees_the_whole_file_and_may_refuse_it(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    seen: list[bytes] = []

    def refuse(tmp: Path) -> None:
        seen.append(tmp.read_bytes())
        raise Boom("not a tarball")

    with pytest.raises(Boom), AtomicHashedWriter(dest, expected_sha256=SHA) as out:
        out.writelines(DATA)
        out.commit(refuse)
    assert seen == [b"".join(DATA)]
    assert listing(tmp_path) == []


def test_mode_and_temporary_naming(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "incoming"
    tmp_dir.mkdir()
    dest = tmp_path / "out.bin"
    with AtomicHashedWriter(dest, tmp_dir=tmp_dir, tmp_prefix=".upload-", tmp_suffix="", mode=0o444) as out:
        assert out.tmp.parent == tmp_dir and out.tmp.name.startswith(".upload-")
        assert not out.tmp.name.endswith(".part")
        out.write(b"x")
        out.commit()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    assert listing(tmp_dir) == []


def test_discard_is_safe_twice_and_after_a_commit(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    out = AtomicHashedWriter(dest)
    out.write(b"x")
    out.commit()
    out.discard()
    out.discard()
    assert dest.read_bytes() == b"x"
    other = AtomicHashedWriter(tmp_path / "other")
    other.discard()
    other.discard()
    assert listing(tmp_path) == ["out.bin"]


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "inside").write_bytes(b"")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError), AtomicHashedWriter(dest) as out:
        out.write(b"x")
        out.commit()
    assert listing(tmp_path) == ["taken"]


def test_it_serves_as_a_compressors_file(tmp_path: Path) -> None:
    """The snapshot packer writes a tar.gz through it: the digest is the written file's."""
    dest = tmp_path / "a.gz"
    with AtomicHashedWriter(dest) as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            gz.write(b"".join(DATA))
        out.commit()
    assert (out.sha256, out.size) == (sha256_file(dest), dest.stat().st_size)
    assert gzip.decompress(dest.read_bytes()) == b"".join(DATA)


def test_the_counter_alone_checks_without_keeping(tmp_path: Path) -> None:
    counter = HashCounter(limit=SIZE, expected_sha256=SHA)
    counter.writelines(DATA)
    counter.check()
    assert (counter.size, counter.hexdigest()) == (SIZE, SHA)
    HashCounter().check()  # nothing expected: nothing to refuse
    wrong = HashCounter(expected_sha256="0" * 64)
    wrong.write(b"x")
    with pytest.raises(DigestMismatchError):
        wrong.check()
    assert os.listdir(tmp_path) == []
