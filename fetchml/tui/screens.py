"""Modal screens: confirm, a value to enter (priority, filter), help."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


def modal_css(name: str, width: int = 72) -> str:
    # DEFAULT_CSS is scoped to its class: each screen names itself.
    return f"""
    {name} {{ align: center middle; }}
    {name} > Vertical {{
        width: {width}; height: auto; max-height: 90%; padding: 1 2;
        border: thick $accent; background: $surface;
    }}
    {name} .hint {{ color: $text-muted; }}
    {name} .error {{ color: $error; }}
    """


class Confirm(ModalScreen[bool]):
    """y confirms; n or escape does not."""

    DEFAULT_CSS = modal_css("Confirm")
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            yield Label("y: yes   n / Esc: no", classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Ask(ModalScreen[str | None]):
    """One line of input; Enter submits what `check` accepts (it returns an error or None),
    Escape gives None."""

    DEFAULT_CSS = modal_css("Ask")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        prompt: str,
        *,
        value: str = "",
        placeholder: str = "",
        hint: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value
        self.placeholder = placeholder
        self.hint = hint
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.prompt)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Label(self.hint, classes="hint")
            yield Label("", classes="error", id="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        problem = self.check(value) if self.check else None
        if problem:
            self.query_one("#error", Label).update(problem)
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


def check_priority(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 10:
        return "a whole number from 1 (lowest) to 10 (highest)"
    return None


HELP = """\
[b]fetchml tui[/b]: the scheduler, live.

[b]Panes[/b] (1-7, or click the tab): Queue, Running, Workers, Reservations, Audit, Ended,
Services (Jupyter). The lower half shows the highlighted task; Enter opens it (all fields,
artifacts, the log).

[b]Keys[/b]
  c        cancel the highlighted task (asks first); on Services: stop the service
  p        set its priority (1-10)
  d        drain the highlighted worker (admin keys only)
  l        follow the task's log in the detail pane (again: stop)
  D        download the task's artifacts to ./fetchml-runs/<task id>/
  /        filter: user:NAME status:STATUS name:TEXT, or words
  s        sort the pane (it cycles)
  v        verify the audit chain (admin keys only)
  r        read everything again from the server
  ↑ ↓ PgUp PgDn Home End   move;  Tab   next pane
  ?        this help;   q   quit

Admin keys follow the scheduler stream: every change shows as it happens. A user key cannot
read that stream; the TUI then loads the queue and running tasks once and follows your own
tasks live through their job streams (r reads the rest again).
"""


class Help(ModalScreen[None]):
    DEFAULT_CSS = modal_css("Help", 100)
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(HELP, id="help")

    def action_close(self) -> None:
        self.dismiss(None)
