"""Plain tables for listing commands, with the standard library only.

Rich's tables cost ~50 ms to import, most of a listing command's start (issue 17); a listing is
a few columns of short values, so this draws the same compact layout (bold header, a rule, two
spaces between columns) by hand:

- stdout a terminal: as wide as the terminal; columns that may fold are narrowed, widest first,
  and their values wrapped, so ids (which users copy) stay whole;
- piped without COLUMNS: never folded, so one row stays one line for grep and awk;
- colour only on a terminal, never with NO_COLOR (https://no-color.org) or TERM=dumb;
  FORCE_COLOR turns it on anywhere, as for Rich.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple, TextIO

GAP = "  "
SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}


class Column(NamedTuple):
    header: str
    fold: bool = True  # False: never wrapped (ids)
    right: bool = False
    min_width: int = 1


Cell = tuple[str, str]  # (text, style): style is "" or space-separated SGR names


def use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def width_for(stream: TextIO) -> int | None:
    """The width to fit: the terminal's (COLUMNS first); None (unbounded) when piped."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if not stream.isatty():
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80


def _fit(natural: list[int], columns: list[Column], width: int | None) -> list[int]:
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
    while excess > 0:
        # The widest column that may still give a character; none left: the line overflows.
        candidates = [i for i, c in enumerate(columns) if c.fold and widths[i] > c.min_width]
        if not candidates:
            break
        i = max(candidates, key=lambda k: widths[k])
        widths[i] -= 1
        excess -= 1
    return widths


def _wrap(value: str, width: int) -> list[str]:
    """Words on lines of `width`; a word longer than that is cut (a long path or id)."""
    lines: list[str] = []
    line = ""
    for word in value.split(" "):
        while len(word) > width:
            room = width - len(line) - (1 if line else 0)
            if room <= 0:
                lines.append(line)
                line, room = "", width
            head, word = word[:room], word[room:]
            line = f"{line} {head}" if line else head
            lines.append(line)
            line = ""
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def _paint(value: str, style: str, color: bool) -> str:
    codes = [SGR[s] for s in style.split() if s in SGR]
    if not color or not codes or not value:
        return value
    return f"\x1b[{';'.join(codes)}m{value}\x1b[0m"


def render(columns: list[Column], rows: list[list[Cell]], width: int | None, color: bool) -> str:
    """The table as text, each line without trailing spaces, ending with a newline."""
    cells = [[(" ".join(text.split()), style) for text, style in row] for row in rows]
    natural = [max([len(col.header), *(len(row[i][0]) for row in cells)]) for i, col in enumerate(columns)]
    widths = _fit(natural, columns, width)
    out = _row_lines(
        columns,
        widths,
        [_wrap(c.header, w) for c, w in zip(columns, widths, strict=True)],
        ["bold"] * len(columns),
        color,
    )
    rule = "─" if (sys.stdout.encoding or "").lower().replace("-", "") in ("utf8", "utf16") else "-"
    out.append(rule * (sum(widths) + len(GAP) * (len(widths) - 1)))
    for row in cells:
        wrapped = [
            _wrap(text, w) if col.fold else [text]
            for (text, _), col, w in zip(row, columns, widths, strict=True)
        ]
        out += _row_lines(columns, widths, wrapped, [style for _, style in row], color)
    return "\n".join(out) + "\n"


def _row_lines(
    columns: list[Column], widths: list[int], wrapped: list[list[str]], styles: list[str], color: bool
) -> list[str]:
    """One row's lines: each cell's k-th wrapped line, padded to its column."""
    out: list[str] = []
    for k in range(max(len(lines) for lines in wrapped)):
        parts = []
        for col, lines, w, style in zip(columns, wrapped, widths, styles, strict=True):
            value = lines[k] if k < len(lines) else ""
            pad = " " * max(w - len(value), 0)
            painted = _paint(value, style, color)
            parts.append(pad + painted if col.right else painted + pad)
        out.append(GAP.join(parts).rstrip())
    return out
