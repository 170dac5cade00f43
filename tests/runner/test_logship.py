"""LogShipper against a real server: order, numbering, byte-bounded chunks, the last lines."""

from __future__ import annotations

from collections.abc import Callable

from fetchml.runner.logship import MAX_CHUNK_BYTES, LogShipper, _chunk
from tests.harness import ServerHandle
from tests.protocol_kit import FakeWorker, submit


def test_chunks_are_bounded_by_bytes_and_never_empty() -> None:
    big = ["x" * 16000] * 100
    first = _chunk(big)
    assert 0 < len(first) < 100
    assert sum(len(line) for line in first) <= MAX_CHUNK_BYTES
    assert _chunk(["y" * (MAX_CHUNK_BYTES * 2)]) == ["y" * (MAX_CHUNK_BYTES * 2)]  # one line always goes
    assert _chunk([]) == []


def test_every_line_arrives_in_order_even_when_chunks_must_be_split(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory()
    admin = srv.make_key("root", "admin")
    worker = FakeWorker(srv, srv.make_key("w", "worker"))
    worker.register()
    task = submit(srv, admin)
    a = worker.must_claim()
    worker.report(a, "running")
    # 4 MB of output in total: far over the 1 MiB request limit if it went as one chunk.
    lines = [f"{i:05d} " + "z" * 16000 for i in range(250)] + ["the last line"]
    shipper = LogShipper(worker.client, task.id, a.attempt, interval=0.05)
    for line in lines:
        shipper.add(line)
    shipper.close()
    assert not shipper.stale
    page = worker.client.logs.page(task.id)
    got = list(page.lines)
    while len(got) < len(lines) and page.lines:
        page = worker.client.logs.page(task.id, offset=page.next_offset)
        got += page.lines
    assert got == lines
    assert shipper.output().endswith("the last line")
    worker.close()
