"""bench/fanout: many SSE subscribers on the scheduler stream while tasks change state.

One server (SQLite) and `--subscribers` open `GET /v1/scheduler/status/stream` connections
(admin key), spread over `--procs` client processes. Once every subscriber holds its snapshot,
a driver submits and cancels tasks at `--rate` task transitions per second (a submit is
`null -> queued`, a cancel `queued -> failed`; each also moves the queue, so a `queue_depth`
event follows each). Afterwards every subscriber must have received every event id after its
snapshot, once, in order. The delivery latency of one event to one subscriber is the wall time
its frame was read minus the event's `at` (stamped in the committing transaction).

The clients read raw bytes (an asyncio Protocol: a minimal HTTP/1.1 GET, dechunking and frame
parsing, no HTTP library): on a 2-core machine the subscribers share the cores with the server
and must not be what is measured. One client process (the default) keeps up; `--procs 2`
spreads them over two, which on 2 cores measured no better (it takes CPU from the server). Each
client process reports its event-loop lag: a large lag means receipt times were late because
the client, not the server, was behind. `--profile FILE` runs the server under cProfile.

    python -m bench.fanout --subscribers 500 --rate 50 --duration 25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.harness import ServerHandle

HOST = "127.0.0.1"


def pct(values: list[float] | array[float], p: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
    return data[k]


# -- the subscriber side (client processes) ---------------------------------------------------


@dataclass
class Shared:
    """What all subscribers of one process share: each event's `at` and type, parsed once."""

    at: dict[int, tuple[float, str]] = field(default_factory=dict)
    latencies: array[float] = field(default_factory=lambda: array("d"))


class SubscriberProtocol(asyncio.Protocol):
    """One SSE connection: dechunks the HTTP/1.1 body and checks the event ids as they come."""

    def __init__(self, shared: Shared, request: bytes) -> None:
        self.shared = shared
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head_done = False
        self.raw = b""
        self.data_left = 0  # of the current chunk
        self.crlf_left = 0  # of the CRLF that ends it
        self.body = b""
        self.snapshot_id: int | None = None
        self.last_id = 0
        self.received = 0
        self.missing = 0
        self.duplicates = 0
        self.resyncs = 0
        self.error: str | None = None
        self.snapshot = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.snapshot.done():
            self.snapshot.set_exception(ConnectionError(self.error or f"closed before the snapshot: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        raw = self.raw + data if self.raw else data
        pos = 0
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                self.raw = raw
                return
            head = raw[:end]
            if head[9:12] != b"200" or b"chunked" not in head.lower():
                self.error = head.decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            self.head_done = True
            pos = end + 4
        body = [self.body] if self.body else []
        n = len(raw)
        while pos < n:
            if self.data_left:
                take = min(self.data_left, n - pos)
                body.append(raw[pos : pos + take])
                pos += take
                self.data_left -= take
            elif self.crlf_left:
                skip = min(self.crlf_left, n - pos)
                pos += skip
                self.crlf_left -= skip
            else:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.error = self.error or "the stream ended"
                    break
                self.data_left, self.crlf_left = size, 2
        self.raw = raw[pos:]
        text = b"".join(body)
        frames = text.split(b"\n\n")
        self.body = frames.pop()
        for frame in frames:
            self._frame(frame, now)

    def _frame(self, frame: bytes, now: float) -> None:
        if not frame.startswith(b"id: "):
            if b"event: resync" in frame:
                self.resyncs += 1
            return  # retry:, keep-alive
        nl = frame.index(b"\n")
        eid = int(frame[4:nl])
        if self.snapshot_id is None:
            if not frame.startswith(b"event: snapshot", nl + 1):
                self.error = "first frame is no snapshot"
                return
            self.snapshot_id = self.last_id = eid
            self.snapshot.set_result(eid)
            return
        if eid <= self.last_id:
            self.duplicates += 1
            return
        self.missing += eid - self.last_id - 1
        self.last_id = eid
        self.received += 1
        known = self.shared.at.get(eid)
        if known is None:
            data = frame[frame.index(b"data: ") + 6 :]
            payload = json.loads(data)
            known = (datetime.fromisoformat(payload["at"]).timestamp(), payload["type"])
            self.shared.at[eid] = known
        self.shared.latencies.append(now - known[0])


async def loop_lag(lags: array[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes: the client loop's own backlog."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - t0 - 0.01)


async def subscribers_main(port: int, key: str, n: int, ctrl: Any, result: Any) -> None:
    loop = asyncio.get_running_loop()
    shared = Shared()
    request = (
        f"GET /v1/scheduler/status/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-API-Key: {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    subs: list[SubscriberProtocol] = []
    sem = asyncio.Semaphore(25)  # connect in waves: 500 snapshots at once would only queue

    async def connect() -> None:
        async with sem:
            _, proto = await loop.create_connection(lambda: SubscriberProtocol(shared, request), HOST, port)
            subs.append(proto)
            await asyncio.wait_for(proto.snapshot, 60)

    await asyncio.gather(*(connect() for _ in range(n)))
    lags: array[float] = array("d")
    stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lags, stop))
    shared.latencies = array("d")
    cpu0 = sum(os.times()[:2])
    result.put(("ready", min(s.snapshot_id or 0 for s in subs), max(s.snapshot_id or 0 for s in subs)))
    # The driver runs; then the parent says which id is the last one.
    final: int = await loop.run_in_executor(None, ctrl.get, True, 600)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(s.last_id < final and s.error is None for s in subs):
        await asyncio.sleep(0.05)
    stop.set()
    await lag_task
    types: dict[str, int] = {}
    for _, t in shared.at.values():
        types[t] = types.get(t, 0) + 1
    result.put(
        (
            "done",
            {
                "subs": [
                    (s.snapshot_id, s.last_id, s.received, s.missing, s.duplicates, s.resyncs, s.error)
                    for s in subs
                ],
                "latencies": shared.latencies.tobytes(),
                "lags": lags.tobytes(),
                "types": types,
                "cpu_s": sum(os.times()[:2]) - cpu0,
            },
        )
    )
    for s in subs:
        if s.transport is not None:
            s.transport.close()


def subscriber_process(port: int, key: str, n: int, ctrl: Any, result: Any) -> None:
    from tests.harness import die_with_parent

    die_with_parent()
    try:
        asyncio.run(subscribers_main(port, key, n, ctrl, result))
    except BaseException as exc:
        result.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


# -- the driver (the parent) ------------------------------------------------------------------


async def drive(port: int, key: str, rate: float, duration: float) -> dict[str, Any]:
    """Submit, cancel, submit, cancel ... at `rate` per second, each at its own time (not
    after the previous answer), over a few keep-alive connections."""
    from bench.common import _read_response, post_json

    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(16):
        conns.put_nowait(await asyncio.open_connection(HOST, port))
    statuses: dict[int, int] = {}
    answered: list[float] = []
    late: list[float] = []
    submitted: dict[int, asyncio.Future[str]] = {}

    async def one(i: int) -> None:
        if i % 2 == 0:
            req = post_json(
                "/v1/tasks", HOST, port, key, {"job_name": f"fanout-{i}", "entrypoint": "true", "priority": 5}
            )
        else:
            # Wait for the id before taking a connection: one held idle past the server's
            # keep-alive timeout would be closed under it.
            task_id = await asyncio.wait_for(submitted[i - 1], 30)
            req = f"DELETE /v1/tasks/{task_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-API-Key: {key}\r\n\r\n".encode()
        reader, writer = await conns.get()
        try:
            t = loop.time()
            writer.write(req)
            status, body = await asyncio.wait_for(_read_response(reader), 30)
            answered.append(loop.time() - t)
            statuses[status] = statuses.get(status, 0) + 1
            if i % 2 == 0:
                submitted[i].set_result(json.loads(body)["id"] if status == 201 else "")
        finally:
            conns.put_nowait((reader, writer))

    total = int(rate * duration) // 2 * 2
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    running: list[asyncio.Task[None]] = []
    for i in range(total):
        if i % 2 == 0:
            submitted[i] = loop.create_future()
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        running.append(asyncio.create_task(one(i)))
    issued = loop.time() - t0
    await asyncio.wait_for(asyncio.gather(*running), 60)
    elapsed = loop.time() - t0
    while not conns.empty():
        _, w = conns.get_nowait()
        w.close()
    return {
        "requests": total,
        "statuses": statuses,
        "issued_per_s": total / issued if issued else float("nan"),
        "elapsed_s": elapsed,
        "late_max_ms": max(late, default=0.0) * 1000,
        "answer_p50_ms": pct(answered, 50) * 1000,
        "answer_p99_ms": pct(answered, 99) * 1000,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from tests.harness import ServerHandle

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="fetchml-fanout-") as tmp:
        handle_class = profiled_server_class(Path(args.profile).resolve()) if args.profile else ServerHandle
        server = handle_class(
            data_dir=Path(tmp),
            env_extra={
                # The cap on open streams is per key (default 20); every subscriber uses one key.
                "FETCHML_MAX_STREAMS_PER_KEY": str(args.subscribers + 10),
                "FETCHML_RATE_LIMIT_PER_MINUTE": "100000000",
                "FETCHML_ACCESS_LOG": "false",
                "FETCHML_LOG_LEVEL": "warning",
            },
        )
        admin = server.make_key("bench-admin", "admin")
        user = server.make_key("bench", "user")
        server.start()
        assert server.proc is not None
        sproc = psutil.Process(server.proc.pid)
        procs: list[Any] = []
        ctrls: list[Any] = []
        result = ctx.Queue()
        try:
            per = [
                args.subscribers // args.procs + (1 if i < args.subscribers % args.procs else 0)
                for i in range(args.procs)
            ]
            t_connect = time.perf_counter()
            for n in per:
                ctrl = ctx.Queue()
                p = ctx.Process(
                    target=subscriber_process, args=(server.port, admin, n, ctrl, result), daemon=True
                )
                p.start()
                procs.append(p)
                ctrls.append(ctrl)
            ready = [_get(result, 120, "ready") for _ in procs]
            connect_s = time.perf_counter() - t_connect
            rss_idle = sproc.memory_info().rss
            start_id = int(server.db_exec("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])
            cpu0 = sum(sproc.cpu_times()[:2])
            t0 = time.perf_counter()
            driven = asyncio.run(drive(server.port, user, args.rate, args.duration))
            final_id = int(server.db_exec("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])
            for c in ctrls:
                c.put(final_id)
            done = [_get(result, 120, "done") for _ in procs]
            wall = time.perf_counter() - t0
            server_cpu = sum(sproc.cpu_times()[:2]) - cpu0
            rss_end = sproc.memory_info().rss
        except BaseException:
            print(f"server log (tail):\n{server.log()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.terminate()
            server.stop()

    latencies: array[float] = array("d")
    lags: array[float] = array("d")
    subs: list[tuple[Any, ...]] = []
    types: dict[str, int] = {}
    client_cpu = 0.0
    for d in done:
        chunk: array[float] = array("d")
        chunk.frombytes(d["latencies"])
        latencies.extend(chunk)
        lag: array[float] = array("d")
        lag.frombytes(d["lags"])
        lags.extend(lag)
        subs.extend(d["subs"])
        for k, v in d["types"].items():
            types[k] = max(types.get(k, 0), v)
        client_cpu += d["cpu_s"]
    expected = final_id - start_id
    per_sub = [s[2] for s in subs]
    missing = sum(s[3] for s in subs) + sum(max(0, final_id - s[1]) for s in subs)
    lat = sorted(latencies)
    return {
        "subscribers": args.subscribers,
        "client_procs": args.procs,
        "connect_s": round(connect_s, 2),
        "snapshot_ids": [min(r[1] for r in ready), max(r[2] for r in ready)],
        "driver": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in driven.items()},
        "events_expected": expected,
        "events_by_type": types,
        "events_per_subscriber_min": min(per_sub),
        "events_per_subscriber_max": max(per_sub),
        "missing": missing,
        "duplicates": sum(s[4] for s in subs),
        "resyncs": sum(s[5] for s in subs),
        "errors": sorted({s[6] for s in subs if s[6]}),
        "deliveries": len(lat),
        "latency_p50_ms": round(pct(lat, 50) * 1000, 1),
        "latency_p90_ms": round(pct(lat, 90) * 1000, 1),
        "latency_p99_ms": round(pct(lat, 99) * 1000, 1),
        "latency_max_ms": round(lat[-1] * 1000, 1) if lat else float("nan"),
        "client_loop_lag_p99_ms": round(pct(lags, 99) * 1000, 1),
        "client_loop_lag_max_ms": round(max(lags, default=0.0) * 1000, 1),
        "server_cpu_pct": round(100 * server_cpu / wall, 1),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "server_rss_idle_mib": round(rss_idle / 2**20, 1),
        "server_rss_end_mib": round(rss_end / 2**20, 1),
        # Other processes on these cores make every figure worse: say how busy the machine was.
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }


def profiled_server_class(profile_to: Path) -> type[ServerHandle]:
    from tests.harness import REPO, ServerHandle, die_with_parent

    class ProfiledServer(ServerHandle):
        """The same server under cProfile (its event loop thread; not the database writer)."""

        def launch(self) -> ProfiledServer:
            import subprocess

            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self.data_dir / f"server-{self.port}.log"
            # Not `python -m cProfile`: uvicorn re-raises SIGTERM after its shutdown, which would
            # kill the process before cProfile writes its file. Our own SIGTERM handler, installed
            # first, is the one uvicorn restores and re-raises to: it writes the stats.
            wrapper = (
                "import cProfile, runpy, signal, sys\n"
                "prof = cProfile.Profile()\n"
                "def dump(*_):\n"
                "    prof.disable()\n"
                f"    prof.dump_stats({str(profile_to)!r})\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, dump)\n"
                "sys.argv = ['fetchml'] + sys.argv[1:]\n"
                "prof.enable()\n"
                "runpy.run_module('fetchml', run_name='__main__')\n"
            )
            self.proc = subprocess.Popen(
                [sys.executable, "-c", wrapper, "serve", "--host", HOST, "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--no-worker"],
                env=self.env(),
                stdout=self.log_path.open("ab"),
                stderr=subprocess.STDOUT,
                cwd=REPO,
                preexec_fn=die_with_parent,
            )  # fmt: skip
            return self

    return ProfiledServer


def _get(q: Any, timeout: float, want: str) -> Any:
    msg = q.get(True, timeout)
    if msg[0] == "error":
        raise RuntimeError(f"subscriber process failed: {msg[1]}")
    if msg[0] != want:
        raise RuntimeError(f"expected {want}, got {msg[0]}")
    return msg[1] if want == "done" else msg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=500)
    # One client process keeps up (it takes about half a core, its loop lag stays in the tens of
    # ms); on 2 cores a second one only takes CPU time from the server it measures.
    ap.add_argument("--procs", type=int, default=1, help="client processes the subscribers are spread over")
    ap.add_argument("--rate", type=float, default=50.0, help="task transitions per second")
    ap.add_argument("--duration", type=float, default=25.0, help="seconds of load")
    ap.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats written to FILE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        d = r["driver"]
        print(
            f"bench/fanout  {r['subscribers']} SSE subscribers ({r['client_procs']} client processes), "
            f"{args.rate:g} task transitions/s for {args.duration:g} s, SQLite"
        )
        print(f"  connected + snapshots : {r['connect_s']} s")
        print(
            f"  driver                : {d['requests']} requests issued at {d['issued_per_s']}/s "
            f"(at most {d['late_max_ms']} ms behind schedule), answers {d['statuses']}, "
            f"answer p50 {d['answer_p50_ms']} ms p99 {d['answer_p99_ms']} ms"
        )
        print(f"  events                : {r['events_expected']} committed {r['events_by_type']}")
        print(
            f"  per subscriber        : {r['events_per_subscriber_min']}..{r['events_per_subscriber_max']} events"
            f"   missing {r['missing']}   duplicates {r['duplicates']}   resyncs {r['resyncs']}"
            f"   errors {r['errors'] or 'none'}"
        )
        print(
            f"  delivery latency      : p50 {r['latency_p50_ms']} ms   p90 {r['latency_p90_ms']} ms   "
            f"p99 {r['latency_p99_ms']} ms   max {r['latency_max_ms']} ms   ({r['deliveries']} deliveries)"
        )
        print(
            f"  CPU                   : server {r['server_cpu_pct']}%   clients {r['client_cpu_pct']}%   "
            f"client loop lag p99 {r['client_loop_lag_p99_ms']} ms, max {r['client_loop_lag_max_ms']} ms   "
            f"load average {r['loadavg_1m_end']} on {os.cpu_count()} CPUs"
        )
        print(
            f"  server RSS            : {r['server_rss_idle_mib']} MiB idle with streams open, {r['server_rss_end_mib']} MiB at the end"
        )
    ok = r["missing"] == 0 and r["duplicates"] == 0 and r["resyncs"] == 0 and not r["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
