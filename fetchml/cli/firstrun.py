"""The first start of `fetchml serve`: an admin key for the local user, in the client config.

On a loopback address the machine's one user is the only one who can reach the server, so a
database with no API key at all gets an admin key for them, written (mode 0600) to the client
config file that every `fetchml` command reads. Beyond loopback nothing is made: who may use a
shared server is the operator's decision, and the log says how to make the first key."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

log = logging.getLogger("fetchml.server")


def keys_create_command(settings: Any) -> str:
    """The `fetchml keys create` line that makes an admin key on this server's database."""
    where = (
        "--database-url URL"  # never echo the URL: it may hold a password
        if settings.database_url
        else f"--data-dir {shlex.quote(str(settings.data_dir))}"
    )
    return f"fetchml keys create --user NAME --role admin {where}"


def ensure_local_key(services: Any, url: str) -> None:
    """`fetchml serve`'s prepare step (see fetchml.server.main.serve): runs once the database
    is migrated, before the port is bound, so a client that sees the server answer finds the
    key already in its config. `services` is the server's fetchml.services.wiring.Services,
    reached only through its attributes: the CLI does not import the layers below the client."""
    from fetchml.cli.embedded import is_loopback
    from fetchml.client.config import config_path, load_file

    settings = services.settings
    if services.keys.any_exist():
        return
    make_one = keys_create_command(settings)
    if not is_loopback(settings.host):
        log.warning(
            "no API key exists yet, and none is made automatically for a server on %s (not "
            "loopback): make an admin key with `%s` (it prints the key once), then on each client "
            "`fetchml config set server_url URL` and `fetchml config set api_key -`",
            settings.host,
            make_one,
        )
        return
    if not settings.local_admin_key:
        log.warning(
            "no API key exists yet (FETCHML_LOCAL_ADMIN_KEY is off): make an admin key with `%s`", make_one
        )
        return
    path = config_path()
    try:
        configured = load_file(path).get("api_key")
    except (ValueError, OSError) as exc:
        log.warning(
            "no API key exists yet, and the client config file could not be read (%s): "
            "make an admin key with `%s`",
            exc,
            make_one,
        )
        return
    if configured:
        log.info(
            "no API key exists yet; the client config file %s already holds an api_key, left as it "
            "is: make a key for this server with `%s`",
            path,
            make_one,
        )
        return
    _create(services, url, path, make_one)


def _create(services: Any, url: str, path: Path, make_one: str) -> None:
    from fetchml.cli.embedded import local_user_name
    from fetchml.client.config import save_values
    from fetchml.core.models import CreatedKey

    try:
        previous: bytes | None = path.read_bytes()
    except FileNotFoundError:
        previous = None
    written: list[bool] = []

    def hand_over(created: CreatedKey) -> None:
        # Inside the key's transaction: a file that cannot be written leaves no key behind
        # that nobody holds, and the next start tries again.
        save_values({"server_url": url, "api_key": created.key}, path)
        written.append(True)

    user = local_user_name()
    try:
        created = services.keys.create_first_admin_key(user, before_commit=hand_over)
    except OSError as exc:
        if written:
            _restore(path, previous)
        log.warning(
            "no API key made: the client config file %s could not be written (%s); make an admin "
            "key with `%s`",
            path,
            exc,
            make_one,
        )
        return
    except BaseException:
        # The file holds a key the database did not keep: put it back as it was.
        if written:
            _restore(path, previous)
        raise
    if created is None:
        return  # another server on this database made the first key between our read and write
    log.info(
        "first run: created admin key %s for %s and saved it (server_url %s) to %s, readable by "
        "you only; fetchml commands on this machine now use it",
        created.id,
        user,
        url,
        path,
    )


def _restore(path: Path, previous: bytes | None) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        if previous is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".restore")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(previous)
        tmp.replace(path)
