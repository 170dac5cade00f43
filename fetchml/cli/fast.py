"""The fast path: what the commonest commands print, without loading typer, httpx or pydantic.

Issue 17 asks `fetchml COMMAND --help` and `fetchml tasks` against a local server to start
within 3x a bare `python -c pass`; typer alone takes twice that to import. So, before the app:

- `fetchml PATH --help` on a terminal of 80 columns or more (or piped): the app's own help
  text, rendered into fetchml/cli/helptext.py (fetchml/cli/helpgen.py; a test fails when stale);
- `fetchml tasks [options]` against an http:// server: one GET with the standard library,
  printed by fetchml/cli/tasklist.py, the renderer the app's command uses too.

Anything else, or anything unusual, returns False and the app runs as it always did: a
command line the fast path does not fully understand (the app reports the usage error), a
request that did not get a 200 (the app asks again and reports the server's error), a config
it cannot read, a proxy or TLS setting (httpx's business). The one failure handled here is a
timeout, which the app would otherwise wait out a second time. FETCHML_NO_FAST_PATH=1 turns
the fast path off (tests compare the two paths with it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

# The options of `fetchml tasks` (fetchml/cli/tasks.py list_tasks) that take a value: flag -> name.
TASKS_OPTIONS = {
    "--status": "status",
    "-s": "status",
    "--user": "user",
    "-u": "user",
    "--limit": "limit",
    "-n": "limit",
    "--offset": "offset",
    "--server": "server",
    "--api-key": "api_key",
}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def attempt(args: list[str]) -> bool:
    """Serve `fetchml ARGS` here; False when the app must."""
    if os.environ.get("FETCHML_NO_FAST_PATH"):
        return False
    if len(args) >= 2 and args[-1] == "--help":
        return _help(args[:-1])
    if args[:1] == ["tasks"]:
        return _tasks(args[1:])
    return False


def _help(path: list[str]) -> bool:
    from fetchml.cli.helptext import HELP, WIDTH
    from fetchml.cli.main import _width

    if _width() != WIDTH - 2:  # a narrower terminal: the app lays it out
        return False

    text = HELP.get(" ".join(path))
    if text is None:
        return False
    sys.stdout.write(text)
    return True


def parse_tasks(args: list[str]) -> dict[str, Any] | None:
    """`fetchml tasks`' options as list_tasks takes them; None for anything else."""
    opts: dict[str, Any] = {"limit": 50, "offset": 0, "as_json": False}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            opts["as_json"] = True
            i += 1
            continue
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not eq and flag not in TASKS_OPTIONS and arg[:2] in TASKS_OPTIONS and len(arg) > 2:
            flag, eq, value = arg[:2], "=", arg[2:]  # -n5
        name = TASKS_OPTIONS.get(flag)
        if name is None:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        if not value or (value.startswith("-") and not eq):
            return None  # an empty value, or a missing one: the app says which
        if name in ("limit", "offset"):
            if not (value.isascii() and value.isdigit()):
                return None
            number = int(value)
            if not (1 <= number <= 1000 if name == "limit" else number >= 0):
                return None
            opts[name] = number
        else:
            opts[name] = value
    return opts


def _tasks(args: list[str]) -> bool:
    opts = parse_tasks(args)
    if opts is None or any(os.environ.get(v) for v in PROXY_VARS):
        return False
    from urllib.parse import urlencode, urlsplit

    from fetchml.client.config import resolve

    try:
        config = resolve(opts.get("server"), opts.get("api_key"))
    except ValueError:
        return False
    url = urlsplit(config.server_url)
    if url.scheme != "http" or url.username or url.password or url.query or url.fragment:
        return False
    params: dict[str, Any] = {"limit": opts["limit"], "offset": opts["offset"]}
    if "status" in opts:
        params["status"] = opts["status"]
    if "user" in opts:
        params["user_id"] = opts["user"]
    headers = {"User-Agent": "fetchml-client", "Accept": "application/json"}
    if config.api_key:
        headers["X-API-Key"] = config.api_key
    page = _get(config.server_url, url.path + "/v1/tasks?" + urlencode(params), headers, config.timeout, opts)
    if page is None:
        return False
    from fetchml.cli.tasklist import show

    show(page, opts["as_json"])
    return True


def _get(base: str, target: str, headers: dict[str, str], timeout: float, opts: dict[str, Any]) -> Any:
    """The JSON body of a 200 answer; None for anything else but a timeout.

    HTTP/1.0 on a plain socket: the server then sends the body whole (never chunked) and
    closes, so reading to the end is the whole answer; http.client would cost ~20 ms to import
    (its email parser, ssl)."""
    import json
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    host, port = url.hostname or "", url.port or 80
    lines = [f"GET {target} HTTP/1.0", f"Host: {url.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        _timed_out(f"Cannot reach fetchml server at {base}: {exc or 'timed out'}", False, opts)
    except OSError:
        return None  # refused, no such host: the app says so, in its words
    chunks: list[bytes] = []
    try:
        with sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except TimeoutError:
        _timed_out(
            f"The fetchml server at {base} accepted the connection but did not answer within {timeout:g}s",
            True,
            opts,
        )
    except (OSError, UnicodeEncodeError):
        return None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if not sep or len(status) < 2 or status[1] != b"200" or b"transfer-encoding:" in head.lower():
        return None
    try:
        page = json.loads(body)
    except ValueError:
        return None
    ok = isinstance(page, dict) and isinstance(page.get("tasks"), list)
    return page if ok and all(isinstance(page.get(k), int) for k in ("total", "offset")) else None


def _timed_out(message: str, answered: bool, opts: dict[str, Any]) -> None:
    """Report the timeout as the app does (its error line, or envelope with --json), and exit."""
    import typer

    from fetchml.cli.common import handle_errors
    from fetchml.client.base import ServerTimeoutError, ServerUnreachableError

    @handle_errors
    def report(as_json: bool) -> None:
        raise (ServerTimeoutError if answered else ServerUnreachableError)(message)

    try:
        report(as_json=opts["as_json"])
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
