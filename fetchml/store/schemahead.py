"""Is the database's schema already at the newest migration? Answered without alembic.

Importing alembic (and mako, and every migration script) costs a server about 9 MB that it would
hold for its whole life only to learn that there is nothing to do. The scripts' own
`revision = "..."` and `down_revision = "..."` lines name the head; anything unusual (several
heads, a merge, a missing version table) says "not known", and the caller asks alembic.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

VERSIONS_DIR = Path(__file__).with_name("migrations") / "versions"
_REVISION = re.compile(r'^revision: [^=]*= "([^"]+)"$', re.M)
_DOWN = re.compile(r'^down_revision: [^=]*= (?:"([^"]+)"|None)$', re.M)


@cache
def script_head() -> str | None:
    """The one revision no script builds on, or None when that is not plain to see."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in VERSIONS_DIR.glob("*.py"):
        body = script.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(body), _DOWN.findall(body)
        if not rev and not down:
            continue  # __init__.py
        if len(rev) != 1 or len(down) != 1:
            return None
        revisions.add(rev[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def at_head(engine: Engine) -> bool:
    """True when the database records exactly the scripts' head revision."""
    head = script_head()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        return False  # no version table yet: a new database
    return list(stored) == [head]
