"""Credentials embedded in URLs, removed before a value is shown or recorded.

A dataset source such as ``https://user:pass@host/x?token=abc`` must reach the worker as given
(it downloads with it), but every API response and audit record shows it as
``https://host/x?token=REDACTED``: no userinfo, and the values of query (and fragment)
parameters whose names look like secrets replaced. Plain paths and names pass unchanged.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "REDACTED"

# Substrings of parameter names that carry secrets: tokens, keys, passwords, signatures
# (S3/GCS pre-signed URLs, Azure SAS `sig`), credentials and sessions.
_SENSITIVE = ("token", "key", "secret", "pass", "pwd", "sig", "auth", "cred", "session", "code", "jwt")

# URLs inside free text (an error message): scheme://, then anything up to whitespace or quotes.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def is_sensitive_param(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SENSITIVE)


def _redact_params(qs: str) -> str:
    """Each `name=value` keeps its value unless the name looks secret; a bare segment (no `=`)
    could itself be a token, so it goes."""
    if not qs:
        return qs
    out: list[str] = []
    for segment in qs.split("&"):
        name, eq, _value = segment.partition("=")
        if not eq:
            out.append(REDACTED)
        elif is_sensitive_param(unquote_plus(name)):
            out.append(f"{name}={REDACTED}")
        else:
            out.append(segment)
    return "&".join(out)


def redact_url(value: str) -> str:
    """`value` without the credentials a URL may carry; anything that is not a URL is returned
    as it is."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        # Unparseable (a bad port, a broken IPv6 literal): show nothing of its authority.
        scheme = value.split("://", 1)[0]
        return f"{scheme}://{REDACTED}"
    if ":" in host:
        host = f"[{host}]"
    # userinfo (user:password@) is dropped whole: a user name can be a token too.
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit(
        (parts.scheme, netloc, parts.path, _redact_params(parts.query), _redact_params(parts.fragment))
    )


def redact_text(text: str) -> str:
    """Every URL inside free text (an error message, an audit field) redacted."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_value(value: Any) -> Any:
    """Strings anywhere inside JSON-like data redacted (audit metadata)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
