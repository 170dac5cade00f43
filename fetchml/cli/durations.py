"""Durations typed on the command line (`--time 90m`), in whole minutes for the server."""

from __future__ import annotations

import re
from typing import Any

import typer

DURATION_FORMAT = "minutes (45), or a number with d, h or m units: 90m, 2h, 1h30m, 1d, 1d12h"
_UNITS = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


def time_option(what: str, default: str, *short: str) -> Any:
    """The `--time DURATION` option of a command that starts `what`."""
    return typer.Option(
        None,
        "--time",
        *short,
        metavar="DURATION",
        help=f"Time limit: stop the {what} after this long running (45 = minutes, 90m, 2h, "
        f"1h30m, 1d). Default: {default}.",
    )


# submit and run (like Slurm's -t/--time).
TASK_TIME_OPT = time_option("task", "the server's (FETCHML_DEFAULT_TIME_LIMIT_MINUTES), else none", "-t")


def parse_minutes(value: str, option: str = "--time") -> int:
    """`45` (minutes), `90m`, `2h`, `1h30m`, `1d`, `1d12h` -> minutes. Units come largest first,
    each at most once; spaces and case do not matter. Raises ValueError with a clear message
    for anything else, and for a duration under one minute."""
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        minutes = int(text)
    else:
        m = _UNITS.match(text)
        if not text or m is None or not any(m.groups()):
            raise ValueError(f"invalid {option} {value!r}: expected {DURATION_FORMAT}")
        days, hours, mins = (int(g) if g else 0 for g in m.groups())
        minutes = days * 1440 + hours * 60 + mins
    if minutes < 1:
        raise ValueError(f"invalid {option} {value!r}: a time limit is at least one minute")
    return minutes


def format_minutes(minutes: int) -> str:
    """90 -> `1h30m`, 45 -> `45m`, 1440 -> `1d`: the way --time takes it."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n) or "0m"
