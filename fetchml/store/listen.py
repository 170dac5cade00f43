"""PostgreSQL LISTEN on its own connection and thread: other servers' commits, as they happen.

The payload is what `fetchml.services.feedlog.notify_payload` wrote: the highest event id the
transaction committed and the wake-up topics it named. Rows are never sent, only ids, so the
8,000-byte NOTIFY limit is never near. A dropped connection is reopened with a growing pause;
after each (re)connect `on_connect` runs, since notices sent while it was away are gone.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger("fetchml.listen")

OnNotice = Callable[[int | None, list[str]], None]


def libpq_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    def __init__(self, url: str, channel: str, on_notice: OnNotice, on_connect: Callable[[], None]) -> None:
        self._url = libpq_url(url)
        self._channel = channel
        self._on_notice = on_notice
        self._on_connect = on_connect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fetchml-pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        import psycopg

        pause = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self.connected.set()
                    pause = 0.2
                    self._on_connect()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._deliver(notice.payload)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", type(exc).__name__, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _deliver(self, payload: str) -> None:
        try:
            body = json.loads(payload)
            last = body.get("last")
            wakes = [str(w) for w in body.get("wake") or []]
            self._on_notice(int(last) if last is not None else None, wakes)
        except Exception:
            log.exception("bad NOTIFY payload %r", payload[:200])
