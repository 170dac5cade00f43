"""Docker for the tests: the local test image and the `docker_client` fixture.

The image is built without any registry, from the host's static busybox, by the same recipe as
.ci/docker.sh (which also installs and starts Docker). Keep TEST_IMAGE and APPLETS in step with it.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backends import skip_or_fail

TEST_IMAGE = "fetchml-test-busybox:latest"
# A real Jupyter server (this environment's Python, jupyter-server, ipykernel), built without any
# registry by .ci/jupyter_image.sh; keep the name in step with it.
JUPYTER_IMAGE = "fetchml-test-jupyter:latest"
MISSING_IMAGE = "fetchml-test-missing:never"  # no registry has it; pulling fails fast offline
BUSYBOX = "/bin/busybox"
# fmt: off
APPLETS = [
    "sh", "echo", "sleep", "cat", "dd", "head", "tail", "ls", "env", "sync", "mkdir", "rm", "true",
    "false", "printf", "kill", "ps", "touch", "wc", "seq", "yes", "test", "[", "id", "pwd", "grep",
    "sed", "tr", "cut", "uname", "stat", "date",
]
# fmt: on


def _image_tar() -> bytes:
    """A root filesystem: /bin/busybox and one link per applet, /tmp, /workspace."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("tmp", 0o1777), ("workspace", 0o755), ("proc", 0o755),
                        ("sys", 0o755), ("dev", 0o755), ("etc", 0o755)):  # fmt: skip
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            tar.addfile(info)
    return buf.getvalue()


def ensure_test_image(client: Any) -> None:
    """Build TEST_IMAGE (docker import of a busybox root filesystem) unless it exists."""
    import docker.errors

    try:
        client.images.get(TEST_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    if not os.path.exists(BUSYBOX) or (shutil.which("ldd") and _dynamic(BUSYBOX)):
        raise RuntimeError(f"{BUSYBOX} (static) is needed to build {TEST_IMAGE}: run .ci/docker.sh")
    repo, tag = TEST_IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(_image_tar(), repository=repo, tag=tag, changes=["ENV PATH=/bin"])
    client.images.get(TEST_IMAGE)  # raises if the import did not produce it


def _dynamic(path: str) -> bool:
    import subprocess

    proc = subprocess.run(["ldd", path], capture_output=True, text=True)
    return proc.returncode == 0 and "not a dynamic executable" not in (proc.stdout + proc.stderr)


def docker_or_skip() -> Any:
    """A connected docker client, or skip (fail under CI=true: Docker is required there)."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        skip_or_fail(f"Docker is not reachable ({exc}); run .ci/docker.sh")
    try:
        ensure_test_image(client)
    except Exception as exc:
        client.close()
        skip_or_fail(f"Docker: cannot build {TEST_IMAGE}: {exc}")
    return client


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker_or_skip()
    yield client
    client.close()


def ensure_jupyter_image(client: Any) -> None:
    """Build JUPYTER_IMAGE (about 15 s) with .ci/jupyter_image.sh unless it exists."""
    import subprocess
    import sys
    from pathlib import Path

    import docker.errors

    try:
        client.images.get(JUPYTER_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    script = Path(__file__).resolve().parents[1] / ".ci" / "jupyter_image.sh"
    proc = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "PYTHON": sys.executable, "FETCHML_JUPYTER_IMAGE": JUPYTER_IMAGE},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed: {(proc.stdout + proc.stderr)[-2000:]}")


@pytest.fixture(scope="session")
def jupyter_image(docker_client: Any) -> str:
    try:
        ensure_jupyter_image(docker_client)
    except Exception as exc:
        skip_or_fail(f"Docker: cannot build {JUPYTER_IMAGE}: {exc}")
    return JUPYTER_IMAGE
