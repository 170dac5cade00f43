"""Images: a task's image is used when present locally, else pulled."""

from __future__ import annotations

import logging
from typing import Any

from fetchml.runner.executors.base import ExecutorError
from fetchml.runner.executors.docker_daemon import _explain

# The docker executor's logger, as before its parts had modules of their own.
log = logging.getLogger("fetchml.runner.executors.docker")


class ImageMixin:
    client: Any

    def ensure_image(self, image: str) -> None:
        """Pull `image` unless it is present locally."""
        import docker.errors

        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot look up image {image!r}: {_explain(exc)}") from exc
        log.info("pulling image %s", image)
        try:
            self.client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise ExecutorError(
                f"image {image!r} not found locally and could not be pulled: {_explain(exc)}"
            ) from exc
