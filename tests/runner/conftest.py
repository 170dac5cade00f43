"""Fixtures for the runner tests. Docker ones come from tests/dockerutil.py."""

from __future__ import annotations

from tests.dockerutil import docker_client, jupyter_image

__all__ = ["docker_client", "jupyter_image"]
