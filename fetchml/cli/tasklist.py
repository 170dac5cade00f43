"""`fetchml tasks`' output, from the page as JSON data: one renderer for the app's command and
for the fast path (fetchml/cli/fast.py), so the two print the same. Standard library only."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from fetchml.cli.tabular import Column, render, use_color, width_for

STATUS_STYLES = {
    "queued": "yellow",
    "preparing": "cyan",
    "running": "blue",
    "collecting": "cyan",
    "completed": "green",
    "failed": "red",
}

COLUMNS = [
    Column("ID", fold=False),
    Column("JOB", min_width=6),
    Column("STATUS", min_width=6),
    Column("PRIO", fold=False, right=True),
    Column("USER", min_width=5),
    Column("CREATED", min_width=10),
    Column("PENDING/ERROR", min_width=13),
]


def local_minute(value: str | None) -> str:
    """An ISO 8601 time from the server as local time to the minute; `-` for none."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")


def table(page: dict[str, Any], width: int | None, color: bool) -> str:
    rows = []
    for t in page["tasks"]:
        status = str(t["status"])
        error = t.get("error")
        rows.append(
            [
                (str(t["id"]), ""),
                (str(t["job_name"]), ""),
                (status, STATUS_STYLES.get(status, "")),
                (str(t["priority"]), ""),
                (str(t["user_id"]), ""),
                (local_minute(t.get("created_at")), ""),
                (str(error or t.get("pending_reason") or ""), "red" if error else "dim"),
            ]
        )
    footer = f"{len(page['tasks'])} of {page['total']} tasks"
    if page["offset"]:
        footer += f" (offset {page['offset']})"
    if page["offset"] + len(page["tasks"]) < page["total"]:
        footer += f"; next page: --offset {page['offset'] + len(page['tasks'])}"
    return render(COLUMNS, rows, width, color) + footer + "\n"


def show(page: dict[str, Any], as_json: bool) -> None:
    """Print the page: as the table, or as JSON (the command's --json) on stdout."""
    out = sys.stdout
    if as_json:
        out.write(json.dumps(page, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(table(page, width_for(out), use_color(out)))
