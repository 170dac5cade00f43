"""What the panes show: the columns and cells of each table, the status bar and the detail
pane. Painting reads the view state and the app's attributes only: no I/O, no feed."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

from rich.text import Text
from textual.widgets import Static

from fetchml.tui.app_base import AppBase
from fetchml.tui.state import TERMINAL, USER, TaskView
from fetchml.tui.widgets import Cell, Column, TextPane, fmt_age

STATUS_STYLES = {
    "queued": "yellow",
    "preparing": "cyan",
    "running": "bold blue",
    "collecting": "cyan",
    "completed": "green",
    "failed": "red",
    "active": "green",
    "draining": "yellow",
    "offline": "red",
    "expired": "dim",
    "claimed": "cyan",
}

# A worker's heartbeat column once it is offline: why.
OFFLINE_WHY = {"heartbeat_lost": "lost", "offline": "stopped"}

QUEUE_COLUMNS = [
    Column("#", 5, right=True),
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("PRIO", 8, right=True),
    Column("GPUS", 5, right=True),
    Column("AGE", 7, right=True),
    Column("PENDING REASON", 20),
]
RUNNING_COLUMNS = [
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("STATUS", 10),
    Column("WORKER", 12),
    Column("GPUS", 10),
    Column("ELAPSED", 8, right=True),
    Column("LAST LOG LINE", 20),
]
ENDED_COLUMNS = [
    Column("TASK", 10),
    Column("NAME", 16),
    Column("USER", 10),
    Column("STATUS", 10),
    Column("EXIT", 5, right=True),
    Column("ENDED", 9),
    Column("ERROR", 20),
]
WORKER_COLUMNS = [
    Column("WORKER", 14),
    Column("STATUS", 9),
    Column("SLOTS", 6, right=True),
    Column("HEARTBEAT", 10, right=True),
    Column("DRAIN", 9),
    Column("GPUS (index:task)", 30),
]
RESERVATION_COLUMNS = [
    Column("RESERVATION", 16),
    Column("USER", 10),
    Column("STATUS", 8),
    Column("GPUS", 5, right=True),
    Column("TYPE", 8),
    Column("NODES", 5, right=True),
    Column("EXPIRES IN", 11, right=True),
    Column("HELD", 20),
]
AUDIT_COLUMNS = [
    Column("SEQ", 7, right=True),
    Column("TIME", 9),
    Column("EVENT", 18),
    Column("USER", 10),
    Column("OK", 3),
    Column("RESOURCE / ACTION", 30),
]


def _clock_text(ts: float | None, tz: tzinfo | None = None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S")


def _short(value: Any, width: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


class Panes(AppBase):
    """Paints from the state and the app's attributes; starts nothing."""

    def _admin_empty(self, text: str) -> str:
        if self.role == USER:
            return "admin keys only (a user key gets 403 here)"
        return text

    # --- cells --------------------------------------------------------------------------------

    def _queue_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        pos = self.state.queue.position(tid)
        aged = self.state.aged(t, self.clock())
        prio = f"{t.priority}" if aged < t.priority + 0.05 else f"{t.priority}→{aged:.1f}"
        return [
            "-" if pos is None else str(pos + 1), tid[:8], t.job_name, t.user_id, prio,
            str(t.gpu * t.node_count), fmt_age(t.age(self.clock())), t.pending_reason or "",
        ]  # fmt: skip

    def _running_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        workers = ",".join(dict.fromkeys(w for w, _ in t.nodes)) or (t.worker_id or "-")
        gpus = " ".join(",".join(map(str, g)) for _, g in t.nodes if g) or "-"
        status = t.status + ("!" if t.cancel_requested else "")
        return [
            tid[:8], t.job_name, t.user_id, (status, STATUS_STYLES.get(t.status, "")), workers, gpus,
            fmt_age(t.elapsed(self.clock())), t.last_log,
        ]  # fmt: skip

    def _ended_cells(self, tid: str) -> list[Cell]:
        t = self.state.tasks[tid]
        cancelled = t.error == "cancelled"
        status = "cancelled" if cancelled else t.status
        return [
            tid[:8], t.job_name, t.user_id, (status, STATUS_STYLES.get(t.status, "")),
            "-" if t.exit_code is None else str(t.exit_code), _clock_text(t.ended_at, self.tz),
            "" if cancelled else (t.error or ""),
        ]  # fmt: skip

    def _worker_cells(self, wid: str) -> list[Cell]:
        w = self.state.workers[wid]
        return [
            w.name, (w.status, STATUS_STYLES.get(w.status, "")),
            f"{w.slots_used}/{w.slots_total}" if w.slots_total else str(w.slots_used),
            fmt_age(w.heartbeat_age(self.clock())) if w.status != "offline" else OFFLINE_WHY.get(w.offline_reason, "-"),
            w.drain or "-", w.gpus_text(),
        ]  # fmt: skip

    def _reservation_cells(self, rid: str) -> list[Cell]:
        r = self.state.reservations[rid]
        left = None if r.expires_at is None else r.expires_at - self.clock()
        held = " ".join(f"{w}:{','.join(map(str, g))}" for w, g in r.gpus.items()) or "-"
        return [
            rid, r.user_id, (r.status, STATUS_STYLES.get(r.status, "")), str(r.gpu_count), r.gpu_type or "any",
            str(r.node_count), fmt_age(left) if left is not None and left > 0 and r.status == "active" else "-", held,
        ]  # fmt: skip

    def _audit_cells(self, seq: str) -> list[Cell]:
        e = self.audit_by_seq[seq]
        when = str(e.get("timestamp", ""))[11:19]
        what = " ".join(str(x) for x in (e.get("resource"), e.get("action"), e.get("error")) if x)
        ok = ("yes", "green") if e.get("success") else ("no", "red")
        return [seq, when, str(e.get("event_type", "")), str(e.get("user_id") or "-"), ok, what]

    # --- status bar and detail ----------------------------------------------------------------

    def _paint_status(self) -> None:
        bar = self.query_one("#statusbar", Static)
        link = self.link
        state = {"up": "● live", "reconnecting": "◌ reconnecting", "down": "✕ no server",
                 "connecting": "… connecting"}.get(link.state, link.state)  # fmt: skip
        who = self.role or "?"
        if self.role == USER:
            who = f"user {self.state.viewer.user_id or ''}".strip() + " · live: your tasks"
        parts = [state, who, self.state.summary()]
        if self.state.last_event_id:
            parts.append(f"event #{self.state.last_event_id}")
        if self.filter:
            parts.append(f"filter: {self.filter.text}")
        if self.state.note:
            parts.append(self.state.note)
        if link.state == "down" and link.detail:
            parts = [state, link.detail]
        line, health = Text("  │  ".join(parts)), self.plugins.text()
        if health:
            line.append("  │  ").append_text(health)
        bar.update(line, layout=False)  # one line, always: no re-layout
        bar.set_class(link.state == "reconnecting", "reconnecting")
        bar.set_class(link.state == "down", "down")

    def _detail_task(self) -> TaskView | None:
        return self.state.tasks.get(self.detail_id) if self.detail_id else None

    def _paint_detail(self) -> None:
        body = self.query_one("#detail-body", TextPane)
        t = self._detail_task()
        if t is None:
            gone = f"Task {self.detail_id} is no longer tracked." if self.detail_id else ""
            body.update(gone or "Highlight a task: its fields, timeline and artifacts show here.")
            return
        now = self.clock()
        out = Text()
        out.append(f"{t.id}\n", "bold")
        out.append(f"{t.job_name}", "bold")
        out.append(f"  {t.user_id}  ")
        out.append(
            t.status + (" (cancel requested)" if t.cancel_requested else ""), STATUS_STYLES.get(t.status, "")
        )
        out.append(f"  priority {t.priority}")
        if t.status == "queued":
            pos = self.state.queue.position(t.id)
            out.append(f"  #{pos + 1} in queue" if pos is not None else "")
        out.append("\n")
        if t.pending_reason and t.status == "queued":
            out.append(f"waiting: {t.pending_reason}\n", "yellow")
        if t.nodes or t.worker_id:
            where = ", ".join(dict.fromkeys(w for w, _ in t.nodes)) or t.worker_id
            gpus = f"  GPUs {t.gpus_text}" if any(g for _, g in t.nodes) else ""
            out.append(f"on {where}{gpus}  elapsed {fmt_age(t.elapsed(now))}\n")
        if t.status in TERMINAL:
            code = "-" if t.exit_code is None else t.exit_code
            out.append(
                f"ended {_clock_text(t.ended_at, self.tz)}  exit {code}  {t.error or ''}\n",
                STATUS_STYLES.get(t.status, ""),
            )
        if not t.live:
            out.append("not live: press r to read again\n" if self.role == USER else "", "dim")
        out.append("\nTimeline\n", "bold underline")
        for step in t.timeline[-16:]:
            where = f" on {step.worker_id}" if step.worker_id else ""
            note = f"  {step.note}" if step.note else ""
            out.append(f"  {_clock_text(step.at, self.tz)}  {step.from_ or 'new'} → {step.to}{where}{note}\n")
        arts = self.artifacts.get(t.id)
        out.append("\nArtifacts", "bold underline")
        if arts is None:
            out.append("  (Enter reads them)\n", "dim")
        else:
            out.append(
                f"  {len(arts)}  (D downloads to {self.download_dir / t.id})\n" if arts else "  none\n"
            )
            for a in arts[:20]:
                out.append(f"  {a.get('path')}  {a.get('size')} B\n")
        if t.fields:
            out.append("\nFields\n", "bold underline")
            for key in sorted(t.fields):
                value = t.fields[key]
                if value in (None, [], {}, ""):
                    continue
                out.append(f"  {key}: ", "bold")
                out.append(_short(value) + "\n")
        following = "following" if self.follow_id == t.id else "l follows it"
        out.append(f"\nLog ({following})", "bold underline")
        body.update(out)
