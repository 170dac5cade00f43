"""Widgets of the TUI. `RowTable` draws only the rows on screen (Textual's line API), reading them
from the view state on each repaint: an event that changes the queue costs one repaint of the
visible rows, never a rebuild of a 10,000-row table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer

HEADER_STYLE = Style(bold=True, underline=True)
CURSOR_STYLE = Style(bgcolor="#264f78", color="#ffffff")
CURSOR_BLUR_STYLE = Style(bgcolor="#3a3d41")
EMPTY_STYLE = Style(dim=True, italic=True)


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # cells; the last column takes what is left
    right: bool = False


Cell = str | tuple[str, str]  # text, or (text, Rich style)


class Rows(Protocol):
    """What a table reads its rows from: a list, or the state's queue index."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> str: ...


class RowTable(ScrollView, can_focus=True):
    """Rows are ids from `rows()`, cells from `cells(id)`. The cursor stays on its id when rows
    move (a priority change reorders the queue under it)."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "Top", show=False),
        Binding("end", "jump(-1)", "Bottom", show=False),
        Binding("enter", "choose", "Open", show=False),
    ]

    DEFAULT_CSS = """
    RowTable { height: 1fr; overflow-x: hidden; }
    """

    cursor: reactive[int] = reactive(0, always_update=False, repaint=True)

    class Highlighted(Message):
        def __init__(self, table: RowTable, row_id: str | None) -> None:
            super().__init__()
            self.table = table
            self.row_id = row_id

    class Chosen(Message):
        def __init__(self, table: RowTable, row_id: str) -> None:
            super().__init__()
            self.table = table
            self.row_id = row_id

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Callable[[], Rows],
        cells: Callable[[str], Sequence[Cell]],
        *,
        empty: str = "nothing here",
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self._rows_fn = rows
        self._cells = cells
        self.empty = empty
        self._ids: Rows = ()
        self._selected: str | None = None

    # --- data ---------------------------------------------------------------------------------

    @property
    def row_ids(self) -> Rows:
        return self._ids

    @property
    def selected_id(self) -> str | None:
        return self._selected

    def reload(self) -> None:
        """Read the rows again (cheap: the state hands out its index or a cached list) and
        repaint what is on screen."""
        ids = self._rows_fn()
        self._ids = ids
        width = sum(c.width + 1 for c in self.columns)
        self.virtual_size = Size(width, len(ids) + 1)
        if self._selected is not None:
            pos = _position(ids, self._selected)
            if pos is not None:
                self.set_reactive(RowTable.cursor, pos)
        if len(ids) == 0:
            self.set_reactive(RowTable.cursor, 0)
        elif self.cursor >= len(ids):
            self.set_reactive(RowTable.cursor, len(ids) - 1)
        new = ids[self.cursor] if len(ids) else None
        if new != self._selected:
            self._selected = new
            self.post_message(self.Highlighted(self, new))
        self.refresh()

    def select(self, row_id: str) -> bool:
        pos = _position(self._ids, row_id)
        if pos is None:
            return False
        self.cursor = pos
        return True

    # --- cursor -------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        ids = self._ids
        row = ids[new] if 0 <= new < len(ids) else None
        if row != self._selected:
            self._selected = row
            self.post_message(self.Highlighted(self, row))
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        if len(self._ids):
            self.cursor = max(0, min(len(self._ids) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        if len(self._ids):
            self.cursor = len(self._ids) - 1 if where < 0 else 0

    def action_choose(self) -> None:
        if self._selected is not None:
            self.post_message(self.Chosen(self, self._selected))

    def on_click(self, event: object) -> None:
        y = getattr(event, "y", None)
        if isinstance(y, int) and y >= 1:
            row = int(self.scroll_y) + y - 1
            if 0 <= row < len(self._ids):
                self.cursor = row

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # --- drawing ------------------------------------------------------------------------------

    def _widths(self) -> list[int]:
        widths = [c.width for c in self.columns]
        used = sum(w + 1 for w in widths[:-1])
        widths[-1] = max(widths[-1], self.size.width - used)
        return widths

    def _line(self, cells: Sequence[Cell], base: Style | None) -> Strip:
        segments = []
        for col, width, cell in zip(self.columns, self._widths(), cells, strict=False):
            text, style = (cell, "") if isinstance(cell, str) else cell
            text = text.replace("\n", " ")
            if col.right and cell_len(text) < width:
                text = " " * (width - cell_len(text)) + text
            text = set_cell_size(text, width) + " "
            rich = Style.parse(style) if style else Style()
            segments.append(Segment(text, base + rich if base else rich))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._line([c.title for c in self.columns], HEADER_STYLE).crop_extend(0, width, None)
        ids = self._ids
        row = int(self.scroll_y) + y - 1
        if not len(ids):
            if y == 1:
                return Strip([Segment(set_cell_size(self.empty, width), EMPTY_STYLE)])
            return Strip.blank(width)
        if row >= len(ids):
            return Strip.blank(width)
        base = None
        if row == self.cursor:
            base = CURSOR_STYLE if self.has_focus else CURSOR_BLUR_STYLE
        try:
            cells = self._cells(ids[row])
        except KeyError:  # the row left between the read and the repaint
            cells = ["…"]
        return self._line(cells, base).crop_extend(0, width, base)


def _position(ids: Rows, row_id: str) -> int | None:
    pos = getattr(ids, "position", None)
    if pos is not None:
        found: int | None = pos(row_id)
        return found
    try:
        return list(ids).index(row_id) if not isinstance(ids, list) else ids.index(row_id)  # type: ignore[call-overload]
    except ValueError:
        return None


def fmt_age(seconds: float | None) -> str:
    """3s, 4m05s, 2h07m, 3d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class StableFooter(Footer):
    """Textual's footer recomposes (new widgets, restyled) whenever focus moves; here only when
    the keys it shows change. Moving between panes drops from ~0.5 s to a few ms."""

    _shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Any) -> None:
        shown = tuple(
            (b.binding.key, b.binding.action, b.enabled)
            for b in screen.active_bindings.values()
            if b.binding.show
        )
        if shown == self._shown:
            return
        self._shown = shown
        super().bindings_changed(screen)


class TextPane(ScrollView):
    """Rich text, wrapped to the width and drawn line by line. A `Static` in a scroll container
    re-lays out the whole screen on every update; this repaints only itself."""

    DEFAULT_CSS = """
    TextPane { overflow-x: hidden; padding: 0 1; }
    """

    def __init__(self, text: str | Text = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = text if isinstance(text, Text) else Text(text)
        self._strips: list[Strip] = []

    @property
    def plain(self) -> str:
        return self._text.plain

    def update(self, text: str | Text) -> None:
        self._text = text if isinstance(text, Text) else Text(text)
        self._wrap()

    def on_resize(self) -> None:
        self._wrap()

    def _wrap(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or not self.is_attached:
            return
        console = self.app.console
        lines = self._text.wrap(console, width)
        self._strips = [Strip(list(line.render(console)), line.cell_len) for line in lines]
        size = Size(width, len(self._strips))
        if self.virtual_size != size:
            self.virtual_size = size
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        i = int(self.scroll_y) + y
        if 0 <= i < len(self._strips):
            return self._strips[i].crop_extend(0, width, None)
        return Strip.blank(width)
