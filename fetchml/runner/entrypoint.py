"""Turn a task's entry point and argument string into the argv an executor runs."""

from __future__ import annotations

import shlex

__all__ = ["build_command"]

_EMPTY = "the entry point is empty: name a script (train.py, run.sh) or a command"


def build_command(entrypoint: str | None, args: str | None, *, python: str) -> list[str]:
    """argv for `entrypoint` with `args` appended.

    The entry point is split like a POSIX shell would split it (quotes respected, nothing
    expanded: no shell ever runs it), then its first word decides how it runs:

    - ``*.py`` runs with `python` (the worker passes its own interpreter for the local executor
      and ``python`` for containers, where the image's interpreter is on PATH);
    - ``*.sh`` runs with ``sh``;
    - anything else is the command itself (``bash run``, ``torchrun --nproc 2 train.py``).

    So ``train.py --lr 3`` works as well as entry point ``train.py`` with args ``--lr 3``; a path
    with spaces must be quoted (``'my train.py'``). `args` is one string, split the same way and
    appended. Raises ValueError for an empty entry point or unbalanced quotes.
    """
    if entrypoint is None or not entrypoint.strip():
        raise ValueError(_EMPTY)
    try:
        words = shlex.split(entrypoint)
        extra = shlex.split(args) if args else []
    except ValueError as exc:  # shlex: "No closing quotation" and friends
        shown = entrypoint if not args else f"{entrypoint} {args}"
        raise ValueError(f"cannot parse the command line {shown!r}: {exc}") from exc
    if not words or not words[0]:  # e.g. entrypoint '""'
        raise ValueError(_EMPTY)
    first = words[0]
    if first.endswith(".py"):
        words = [python, *words]
    elif first.endswith(".sh"):
        words = ["sh", *words]
    return words + extra
