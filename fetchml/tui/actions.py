"""What the keys and the mouse do: the highlighted task (and its detail), the tabs, and the
actions the bindings name (fetchml/tui/app.py). Writes go through `_call`, on a thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import Log, Static, TabbedContent

from fetchml.tui.screens import Ask, Confirm, Help, check_priority
from fetchml.tui.services import ServicesPane, stop_question
from fetchml.tui.state import (
    ADMIN,
    ENDED,
    QUEUE,
    QUEUE_SORTS,
    RUNNING,
    RUNNING_SORTS,
    TERMINAL,
    USER,
    WORKER_SORTS,
    TaskFilter,
    TaskView,
)
from fetchml.tui.updates import Updates
from fetchml.tui.widgets import RowTable

TASK_TABS = {"queue": QUEUE, "running": RUNNING, "ended": ENDED}
AUDIT_ROWS = 200


class Actions(Updates):
    """Selection, the detail pane's task, and the actions the bindings name."""

    # --- the detail pane's task ---------------------------------------------------------------

    def _show_detail(self, tid: str | None, *, load: bool = False) -> None:
        changed = tid != self.detail_id
        self.detail_id = tid
        if changed:
            log = self.query_one("#log", Log)
            log.clear()
            if tid is not None and tid in self.log_lines:
                log.write_lines(self.log_lines[tid])
        self._paint_detail()
        if load and tid is not None and self.client is not None:
            c = self.client

            def read() -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
                task = c.tasks.get(tid).model_dump(mode="json", exclude_none=True)
                try:
                    arts: list[dict[str, Any]] | None = [
                        a.model_dump(mode="json") for a in c.artifacts.list(tid)
                    ]
                except Exception:  # someone else's task: its artifacts are not ours to read (403)
                    arts = None
                return task, arts

            def shown(result: tuple[dict[str, Any], list[dict[str, Any]] | None]) -> None:
                task, arts = result
                if arts is not None:
                    self.artifacts[tid] = arts
                self._changed(self.state.set_fields(task))
                self._paint_detail()

            self._call(read, shown)

    # --- panes and selection ------------------------------------------------------------------

    def _tab(self) -> str:
        return str(self.query_one("#tabs", TabbedContent).active or "queue")

    def _table(self, tab: str | None = None) -> RowTable:
        return self.query_one(f"#{tab or self._tab()}-table", RowTable)

    def on_row_table_highlighted(self, message: RowTable.Highlighted) -> None:
        table_id = message.table.id or ""
        if (
            table_id.removesuffix("-table") in TASK_TABS
            and message.row_id is not None
            and message.table.has_focus
        ):
            self._show_detail(message.row_id)

    def on_row_table_chosen(self, message: RowTable.Chosen) -> None:
        table_id = message.table.id or ""
        if table_id.removesuffix("-table") in TASK_TABS:
            self._show_detail(message.row_id, load=True)
        elif table_id == "workers-table":
            self.filter = TaskFilter()
            self.sorts["running"] = "worker"
            self.action_tab("running")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = str(event.pane.id or "")
        table = self.query_one(f"#{tab}-table", RowTable)
        table.reload()
        table.focus()
        if tab == "audit" and not self.audit_rows and self.role == ADMIN:
            self.action_reload_audit()
        if tab == "services" and self._services_poll is not None:
            self._services_poll.poke()

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def _selected_task(self) -> TaskView | None:
        tab = self._tab()
        if tab in TASK_TABS:
            tid = self._table(tab).selected_id
            if tid is not None and tid in self.state.tasks:
                return self.state.tasks[tid]
        return self._detail_task()

    # --- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("drain", "verify"):
            return self.role == ADMIN  # hidden, and refused, for a user key
        return True

    def action_cancel(self) -> None:
        if self._tab() == "services":
            self._stop_service()
            return
        t = self._selected_task()
        if t is None:
            self.notify("Highlight a task to cancel first.", severity="warning")
            return
        if t.status in TERMINAL:
            self.notify(f"Task {t.id[:8]} has already ended ({t.status}).", severity="warning")
            return
        if self.client is None:
            return
        c, tid = self.client, t.id

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(lambda: c.tasks.cancel(tid), lambda _: self._after_write(tid, "cancel sent"))

        self.push_screen(Confirm(f"Cancel task {tid} ({t.job_name}, {t.status}, {t.user_id})?"), answered)

    def _stop_service(self) -> None:
        s = self.query_one("#services-pane", ServicesPane).selected()
        if s is None:
            self.notify("Highlight a service to stop first.", severity="warning")
            return
        question, may = stop_question(s)
        if not may:
            self.notify(question, severity="warning")
            return
        if self.client is None:
            return
        c, sid, poll = self.client, str(s["id"]), self._services_poll

        def stopped(_: None) -> None:
            self.notify(f"stop sent: {sid[:8]}", timeout=4)
            if poll is not None:
                poll.poke()

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(lambda: c.jupyter.stop(sid), stopped)

        self.push_screen(Confirm(question), answered)

    def _after_write(self, tid: str, what: str) -> None:
        """The change comes back as an event when the task is live; a user key's other tasks
        are read again."""
        self.notify(f"{what}: {tid[:8]}", timeout=4)
        t = self.state.tasks.get(tid)
        if self.client is not None and (t is None or not t.live):
            c = self.client
            self._call(lambda: c.tasks.get(tid).model_dump(mode="json", exclude_none=True),
                       lambda task: self._changed(self.state.set_fields(task)))  # fmt: skip

    def action_priority(self) -> None:
        t = self._selected_task()
        if t is None:
            self.notify("Highlight a task first.", severity="warning")
            return
        if self.client is None:
            return
        c, tid = self.client, t.id

        def answered(value: str | None) -> None:
            if value:

                def done(task: dict[str, Any]) -> None:
                    self._changed(self.state.set_fields(task))
                    self.notify(f"priority {value}: {tid[:8]}", timeout=4)

                self._call(
                    lambda: c.scheduler.set_priority(tid, int(value)).model_dump(
                        mode="json", exclude_none=True
                    ),
                    done,
                )

        self.push_screen(
            Ask(f"Priority of {tid[:8]} ({t.job_name}), now {t.priority}:", value=str(t.priority),
                hint="1 (lowest) to 10 (highest); Enter sets it, Esc leaves it", check=check_priority),
            answered,
        )  # fmt: skip

    def action_drain(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        if self._tab() != "workers":
            self.action_tab("workers")
            self.notify("Highlight the worker to drain, then press d.", timeout=4)
            return
        wid = self._table("workers").selected_id
        if wid is None:
            return
        c = self.client

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(
                    lambda: c.scheduler.drain(wid), lambda _: self.notify(f"draining {wid}", timeout=4)
                )

        self.push_screen(Confirm(f"Drain worker {wid}? It takes no new task; running ones finish."), answered)

    def action_follow_logs(self) -> None:
        t = self._selected_task()
        if t is None:
            return
        if self.follow_id == t.id:
            self.follow_id = None
        else:
            self.follow_id = t.id
            self._logs_done.discard(t.id)
            self._show_detail(t.id, load=t.id not in self.artifacts)
        self._sync_log_follows()
        self._paint_detail()

    def action_filter(self) -> None:
        def answered(value: str | None) -> None:
            if value is None:
                return
            self.filter = TaskFilter.parse(value)
            for tab in TASK_TABS:
                self._table(tab).reload()
            self._paint_status()

        self.push_screen(
            Ask("Filter tasks:", value=self.filter.text, placeholder="user:alice status:running name:train",
                hint="empty shows everything"),
            answered,
        )  # fmt: skip

    def action_sort(self) -> None:
        tab = self._tab()
        modes = {"queue": QUEUE_SORTS, "running": RUNNING_SORTS, "workers": WORKER_SORTS}.get(tab)
        if modes is None:
            return
        self.sorts[tab] = modes[(modes.index(self.sorts[tab]) + 1) % len(modes)]
        self._table(tab).reload()
        self.notify(f"{tab} sorted by {self.sorts[tab]}", timeout=2)

    def action_download(self) -> None:
        t = self._selected_task()
        if t is None or self.client is None:
            return
        c, tid, dest = self.client, t.id, self.download_dir / t.id

        def fetch() -> tuple[int, Path]:
            # The client's download checks every path (the server's list may hold one another
            # user or a task chose) and every file's sha256, and takes one attempt only.
            got = c.artifacts.download_all(tid, dest)
            return len(got.files), dest

        self._call(fetch, lambda r: self.notify(f"{r[0]} artifact(s) of {tid[:8]} in {r[1]}", timeout=6))

    def action_verify(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        c = self.client
        self.query_one("#chain", Static).update("verifying the audit chain…")

        def shown(v: Any) -> None:
            ok = "valid" if v.valid else f"BROKEN at event {v.first_tampered}: {v.reason or ''}"
            self.chain = f"chain {ok}; {v.total_events} events; root {(v.chain_root_hash or '-')[:16]}; verified {v.verified_at:%H:%M:%S}"
            self.query_one("#chain", Static).update(Text(self.chain, "green" if v.valid else "bold red"))
            self.notify(self.chain, severity="information" if v.valid else "error", timeout=6)

        self._call(c.audit.verify, shown)

    def action_reload_audit(self) -> None:
        if self.role != ADMIN or self.client is None:
            return
        c = self.client

        def read() -> tuple[list[dict[str, Any]], Any]:
            events = [e.model_dump(mode="json") for e in c.audit.events(limit=AUDIT_ROWS).events]
            return events, c.audit.chain_root()

        def shown(result: tuple[list[dict[str, Any]], Any]) -> None:
            events, root = result
            self.audit_rows = events
            self.audit_by_seq = {str(e["sequence_num"]): e for e in events}
            self.query_one("#audit-table", RowTable).reload()
            head = f"{root.total_events} events; root {root.root_hash[:16]}"
            self.query_one("#chain", Static).update(self.chain or f"{head}  (v verifies the chain)")

        self._call(read, shown)

    def action_reload(self) -> None:
        if self.client is None:
            return
        if self._tab() == "audit":
            self.action_reload_audit()
            return
        if self.role == USER:
            self._start_user_feed()
        else:
            self._start_scheduler_feed(fresh=True)
        self.notify("reading again from the server", timeout=2)

    def action_help(self) -> None:
        self.push_screen(Help())
