"""bench/tui: the TUI with 10,000 queued tasks and 100 workers, driven by Textual's pilot.

The state is the sample cluster (fetchml/tui/sample.py: `--workers` boxes of 8 GPUs, each GPU
running a task, and `--queued` tasks waiting), put in the app with no server, so what is timed
is the TUI alone. Reported:

- key press -> repaint: the wall time of `pilot.press(key)` plus the wait until the app is idle
  again (the key handled and the screen redrawn), per key, over moves in the queue (down,
  page down, end, home), tab switches, a sort and a filter;
- the same while events stream in: a thread posts scheduler events (priority changes,
  transitions, queue depths) at `--rate` per second, as the feed thread does;
- an event burst: 1,000 events posted at once, until applied and repainted;
- memory: the process's RSS after the load and at the end.

Goals (issue 12): under 100 ms from key press to repaint, under 300 MB.

    python -m bench.tui                       # --queued 10000 --workers 100 --rate 200
    python -m bench.tui --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psutil
from textual.app import App
from textual.screen import Screen

from fetchml.tui.app import FeedMessage, FetchmlTui
from fetchml.tui.feed import Event
from fetchml.tui.sample import NOW, _tid, scale_state


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))] if data else float("nan")


def rss_mb() -> float:
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


class Events:
    """Scheduler events as the stream sends them, touching the big queue."""

    def __init__(self, queued: int, start_id: int = 10) -> None:
        self.queued = queued
        self.id = start_id
        self.n = 0

    def next(self) -> Event:
        self.id += 1
        self.n += 1
        i = (self.n * 7919) % self.queued
        at = datetime.fromtimestamp(NOW, UTC).isoformat()
        if self.n % 4 == 0:
            data: dict[str, Any] = {"depth": self.queued, "by_priority": {}}
            return Event("queue_depth", {"id": self.id, "type": "queue_depth", "at": at, **data}, self.id)
        data = {"task_id": _tid(i), "job_name": "sweep", "user_id": "alice", "from": 1 + i % 10,
                "to": 1 + (i + self.n) % 10, "status": "queued"}  # fmt: skip
        return Event(
            "priority_changed", {"id": self.id, "type": "priority_changed", "at": at, **data}, self.id
        )


# When each repaint of the screen finished (the compositor's refresh, which draws the frame).
REPAINTS: list[float] = []
_refresh = Screen._compositor_refresh


def _timed_refresh(self: Screen[Any]) -> None:
    _refresh(self)
    REPAINTS.append(time.perf_counter())


Screen._compositor_refresh = _timed_refresh  # type: ignore[method-assign]

# When each key's action (a binding: cursor move, tab, sort) had run.
ACTIONS: list[float] = []
_run_action = App.run_action


async def _timed_run_action(self: App[Any], *args: Any, **kwargs: Any) -> bool:
    done = await _run_action(self, *args, **kwargs)
    ACTIONS.append(time.perf_counter())
    return done


App.run_action = _timed_run_action  # type: ignore[method-assign]


async def timed_press(pilot: Any, key: str) -> tuple[float, float]:
    """(ms from the key to the first repaint after its action ran: the frame that shows it; ms
    to the last repaint before the app is idle again, after which nothing more changes. While
    events stream in the app is never idle, and only the first means anything.)"""
    t0 = time.perf_counter()
    await pilot.press(key)
    await pilot.pause()
    handled = next((t for t in ACTIONS if t > t0), t0)
    after = [t for t in REPAINTS if t > handled]
    if not after:
        return float("nan"), float("nan")
    return (after[0] - t0) * 1000, (after[-1] - t0) * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rss0 = rss_mb()
    t0 = time.perf_counter()
    state = scale_state(args.queued, args.workers)
    load_s = time.perf_counter() - t0
    app = FetchmlTui(None, state=state, clock=lambda: NOW, tz=UTC)
    out: dict[str, Any] = {
        "queued": len(state.queue),
        "running": len(state.running),
        "workers": len(state.workers),
    }
    keys = ["down"] * 30 + ["pagedown"] * 10 + ["end", "home"] + ["2", "3", "1"] + ["s", "s", "s", "s"]
    async with app.run_test(size=(160, 48)) as pilot:
        t1 = time.perf_counter()
        await pilot.pause()
        out["first_paint_ms"] = (time.perf_counter() - t1) * 1000
        out["rss_after_load_mb"] = rss_mb()

        idle = [await timed_press(pilot, k) for k in keys]
        # A filter: type it in the prompt, then Enter applies it to 10,000 rows.
        await pilot.press("slash", *"user:alice")
        out["filter_apply_ms"] = (await timed_press(pilot, "enter"))[1]
        await pilot.press("slash", "ctrl+u", "enter")
        await pilot.pause()

        # Keys while events stream in from another thread, as from the feed.
        gen = Events(args.queued)
        stop = threading.Event()

        def stream() -> None:
            gap = 1.0 / args.rate
            while not stop.is_set():
                app.post_message(FeedMessage(gen.next()))
                stop.wait(gap)

        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        await pilot.pause(0.5)
        live = [await timed_press(pilot, k) for k in keys]
        stop.set()
        feeder.join()
        await pilot.pause()

        # A burst of 1,000 events.
        before = state.events_applied
        t2 = time.perf_counter()
        for _ in range(1000):
            app.post_message(FeedMessage(gen.next()))
        while state.events_applied < before + 1000:
            await pilot.pause(0.01)
        await pilot.pause()
        out["burst_1000_events_ms"] = (time.perf_counter() - t2) * 1000
        out["events_streamed"] = gen.n - 1000
        out["rss_end_mb"] = rss_mb()

    def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
        first = [f for f, _ in samples]
        settled = [s for _, s in samples]
        return {"first_p50": pct(first, 50), "first_p95": pct(first, 95), "first_max": max(first),
                "settled_p50": pct(settled, 50), "settled_p95": pct(settled, 95), "settled_max": max(settled),
                "n": len(samples)}  # fmt: skip

    out.update(
        load_state_s=load_s,
        rss_before_mb=rss0,
        key_ms=summary(idle),
        key_ms_while_streaming={**summary(live), "rate_per_s": args.rate},
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queued", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second while keys are pressed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    k, kl = out["key_ms"], out["key_ms_while_streaming"]
    print(f"state: {out['queued']} queued, {out['running']} running on {out['workers']} workers "
          f"(built in {out['load_state_s']:.2f} s); first paint {out['first_paint_ms']:.0f} ms")  # fmt: skip
    print(f"key press -> repaint (idle, {k['n']} keys): first frame p50 {k['first_p50']:.0f} ms, "
          f"p95 {k['first_p95']:.0f} ms, max {k['first_max']:.0f} ms; settled p50 {k['settled_p50']:.0f} ms, "
          f"p95 {k['settled_p95']:.0f} ms, max {k['settled_max']:.0f} ms")  # fmt: skip
    print(f"key press -> repaint ({kl['rate_per_s']:.0f} events/s streaming in, {kl['n']} keys): first frame "
          f"p50 {kl['first_p50']:.0f} ms, p95 {kl['first_p95']:.0f} ms, max {kl['first_max']:.0f} ms")  # fmt: skip
    print(f"filter over the queue: {out['filter_apply_ms']:.1f} ms; burst of 1,000 events applied and repainted: "
          f"{out['burst_1000_events_ms']:.0f} ms")  # fmt: skip
    print(f"memory (RSS): {out['rss_before_mb']:.0f} MB at start, {out['rss_after_load_mb']:.0f} MB loaded, "
          f"{out['rss_end_mb']:.0f} MB at the end")  # fmt: skip


if __name__ == "__main__":
    main()
