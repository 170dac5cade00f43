"""`fetchml artifacts`: list a task's artifacts, or download the newest attempt's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fetchml.cli.common import (
    EXIT_ERROR,
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fail,
    handle_errors,
    print_json,
    table,
    text,
)

if TYPE_CHECKING:
    from fetchml.core.protocol import Artifact


def human_size(n: int) -> str:
    """1023 B, 1.0 KiB, 4.5 MiB, ..."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _targets(directory: Path, arts: list[Artifact]) -> list[tuple[Artifact, Path]]:
    """Where each artifact goes; a path that would leave DIR (.., absolute, through a symbolic
    link) is refused before anything is fetched."""
    from fetchml.client.artifacts import safe_destination

    out = []
    for art in arts:
        try:
            dest = safe_destination(directory, art.path)
        except ValueError:
            fail(f"the server sent an unsafe artifact path {art.path!r}; nothing was downloaded", EXIT_ERROR)
        out.append((art, dest))
    return out


def _download(c: Any, task_id: str, directory: Path, arts: list[Artifact]) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    targets = _targets(directory, arts)
    err = console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        bar = progress.add_task("downloading", total=sum(a.size for a in arts))
        for art, dest in targets:
            progress.update(bar, description=art.path)
            c.artifacts.download(task_id, art.path, dest, attempt=art.attempt)
            if _sha256(dest) != art.sha256:
                fail(f"{art.path}: downloaded file does not match its sha256 {art.sha256}", EXIT_ERROR)
            progress.advance(bar, art.size)


@handle_errors
def artifacts(
    task_id: str = typer.Argument(..., help="Task id, as printed by submit or tasks."),
    download: Path | None = typer.Option(
        None,
        "--download",
        "-d",
        metavar="DIR",
        file_okay=False,
        help="Download the newest attempt's artifacts into DIR, keeping their relative paths.",
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List a task's artifacts (every attempt, newest first), or download them.

    Examples:

      fetchml artifacts 3f2a9c0e
      fetchml artifacts 3f2a9c0e --download ./results
    """
    newest: int | None = None
    chosen: list[Artifact] = []
    with client(server, api_key) as c:
        arts = c.artifacts.list(task_id)
        if download is not None:
            newest = max((a.attempt for a in arts), default=None)
            chosen = [a for a in arts if a.attempt == newest]
            if chosen:
                download.mkdir(parents=True, exist_ok=True)
                _download(c, task_id, download, chosen)
    if download is not None:
        if as_json:
            print_json(
                {"task_id": task_id, "attempt": newest, "directory": str(download), "artifacts": chosen}
            )
        elif not chosen:
            typer.echo(f"Task {task_id} has no artifacts; nothing downloaded")
        else:
            total = human_size(sum(a.size for a in chosen))
            typer.echo(f"Downloaded {len(chosen)} files ({total}) of attempt {newest} to {download}")
        return
    if as_json:
        print_json(arts)
        return
    if not arts:
        typer.echo(f"Task {task_id} has no artifacts")
        return
    rows = table(
        ("PATH", {"overflow": "fold", "min_width": 8}),
        ("SIZE", {"justify": "right", "no_wrap": True}),
        ("SHA256", {"no_wrap": True}),
        ("ATTEMPT", {"justify": "right", "no_wrap": True}),
    )
    for a in arts:
        rows.add_row(text(a.path), text(human_size(a.size)), text(a.sha256[:12]), text(a.attempt))
    out = console()
    out.print(rows)
    out.print(text(f"{len(arts)} artifacts, {human_size(sum(a.size for a in arts))}"))
