"""`fetchml health`: is a server answering? Needs no key; --wait makes it usable in scripts."""

from __future__ import annotations

import time

import typer

from fetchml.cli.common import JsonOpt, ServerOpt, client, fail, handle_errors, print_json


@handle_errors
def health(
    server: str | None = ServerOpt,
    wait: float = typer.Option(0.0, "--wait", help="Keep trying for up to this many seconds."),
    as_json: bool = JsonOpt,
) -> None:
    """Check that the server answers /health (no API key needed)."""
    from fetchml.client import ServerUnreachableError

    deadline = time.monotonic() + max(wait, 0.0)
    with client(server, None) as c:
        while True:
            try:
                result = c.health()
                break
            except ServerUnreachableError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{c.server_url}: {result.status} (fetchml {result.version})")
    if result.status != "healthy":
        fail(f"server reports {result.status}")
