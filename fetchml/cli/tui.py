"""`fetchml tui`: the live dashboard (fetchml/tui). Textual is imported only when it runs."""

from __future__ import annotations

import typer

from fetchml.cli.common import ApiKeyOpt, ServerOpt, handle_errors


@handle_errors
def tui(
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    download_dir: str = typer.Option(
        "fetchml-runs",
        "--download-dir",
        metavar="DIR",
        help="Where D saves a task's artifacts (DIR/<task id>/).",
    ),
) -> None:
    """Open the dashboard: queue, running tasks, workers, reservations and audit, live.

    With an admin key it follows the scheduler's event stream; with a user key it reads the
    queue and running tasks once and follows your own tasks live. Press ? inside for the keys.
    With no server running it says how to start one and connects when one answers.

      fetchml tui
      fetchml tui --server http://gpu-head:9101
    """
    from pathlib import Path

    from fetchml.client import FetchmlClient, resolve
    from fetchml.tui.app import FetchmlTui

    with FetchmlClient.from_config(resolve(server, api_key)) as c:
        FetchmlTui(c, download_dir=Path(download_dir)).run()
