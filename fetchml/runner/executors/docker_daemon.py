"""The Docker daemon itself: whether one answers, whether an error is a broken connection to it,
and the text of its answers."""

from __future__ import annotations

import math


def _daemon_unreachable(exc: BaseException) -> bool:
    """A broken connection to the daemon (it stopped or restarted), not an answer from it."""
    import requests

    return isinstance(exc, requests.exceptions.RequestException)


def docker_available(timeout: float = 3.0) -> bool:
    """Whether a Docker daemon answers a ping within `timeout` seconds (for ``--executor auto``).
    False on any error, including the docker SDK not being installed."""
    try:
        import docker

        client = docker.from_env(timeout=max(1, math.ceil(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    text = explanation if isinstance(explanation, str) and explanation else str(exc)
    return text.strip() or type(exc).__name__
