"""Shared benchmark plumbing: a real server subprocess and a cheap keep-alive HTTP load generator.

The load generator speaks HTTP/1.1 on raw asyncio streams because the client shares this
machine's two cores with the server: a heavyweight client would measure itself."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    server_cpu: float = 0.0  # seconds of the server process's CPU over the run, where measured

    def ok(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    def summary(self) -> dict[str, float]:
        return {
            "requests": len(self.latencies),
            "elapsed_s": round(self.elapsed, 3),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p90_ms": round(self.percentile(90) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "max_ms": round(max(self.latencies) * 1000, 2) if self.latencies else float("nan"),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2) if self.latencies else float("nan"),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run_load(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    concurrency: int,
    total: int,
    time_limit: float,
) -> LoadResult:
    result = LoadResult()
    counter = 0
    deadline = time.perf_counter() + time_limit

    async def conn_loop() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while counter < total and time.perf_counter() < deadline:
                i = counter
                counter += 1
                req = make_request(i)
                t0 = time.perf_counter()
                writer.write(req)
                status, _ = await _read_response(reader)
                result.latencies.append(time.perf_counter() - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(conn_loop() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def post_json(path: str, host: str, port: int, key: str, body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
