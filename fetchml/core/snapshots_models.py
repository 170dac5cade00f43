"""Wire model and digest rule of the content-addressed snapshot store."""

from __future__ import annotations

from fetchml.core.errors import ValidationError
from fetchml.core.models import SHA256_RE, Wire


def check_digest(digest: str) -> str:
    """A snapshot is named by its SHA-256: exactly 64 lowercase hexadecimal characters."""
    if not isinstance(digest, str) or not SHA256_RE.match(digest):
        raise ValidationError("sha256 must be 64 lowercase hexadecimal characters")
    return digest


class SnapshotInfo(Wire):
    sha256: str
    size: int
    existed: bool
