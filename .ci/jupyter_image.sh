#!/usr/bin/env bash
# Build the local Docker image with a real Jupyter server for the Jupyter service tests
# (tests/e2e/test_jupyter_docker.py, tests/runner/test_services_docker.py). Idempotent: does
# nothing when the image exists (FORCE=1 rebuilds). Needs no registry and no network: the image
# is `docker import`ed from a root filesystem made of this machine's Python interpreter, its
# standard library, the shared libraries it and the extension modules link (ldd), and
# jupyter-server, ipykernel and what they need, copied from the environment of $PYTHON (default
# .venv/bin/python, else python3), which must have them (pip install -e '.[dev]').
#
# The image name is also in tests/dockerutil.py (JUPYTER_IMAGE); keep the two in step.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${FETCHML_JUPYTER_IMAGE:-fetchml-test-jupyter:latest}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

log() { echo "== jupyter_image.sh: $*"; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
    exit 0
fi
if ! "$PYTHON" -c 'import jupyter_server, ipykernel' 2>/dev/null; then
    log "$PYTHON cannot import jupyter_server and ipykernel: install fetchml[dev] (or [jupyter]) first" >&2
    exit 1
fi
started=$(date +%s.%N)
base="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
log "building $IMAGE from $PYTHON (interpreter under $base)"

"$PYTHON" - <<'EOF' | docker import \
    --change "ENV PATH=$base/bin:/usr/local/bin:/usr/bin:/bin" \
    --change "ENV PYTHONPATH=/opt/fetchml-jupyter/site-packages" \
    --change "ENV LANG=C.UTF-8" \
    --change "WORKDIR /workspace" \
    - "$IMAGE" >/dev/null
import importlib.metadata as md
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from packaging.requirements import Requirement

SITE = "/opt/fetchml-jupyter/site-packages"
ROOTS = ["jupyter-server", "ipykernel"]
# Parts of the standard library no Jupyter server needs: the biggest first.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}

base = Path(sys.base_prefix)
exe = Path(os.path.realpath(sys.executable))
stdlib = Path(sysconfig.get_paths()["stdlib"])
venv_site = [Path(p).resolve() for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}]
prefix = Path(sys.prefix).resolve()

files: dict[str, Path] = {}  # path in the image -> file here
links: dict[str, str] = {}


def add(target: str, source: Path) -> None:
    files.setdefault(target, source)


# The interpreter, and `python3` next to it.
add(str(exe), exe)
if exe.name != "python3":
    links[str(exe.parent / "python3")] = exe.name
# The standard library, compiled files included (imports need not compile anything).
for dirpath, dirnames, filenames in os.walk(stdlib):
    if Path(dirpath) == stdlib:
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP and not d.startswith("config-")]
    for name in filenames:
        p = Path(dirpath) / name
        if p.is_file():
            add(str(p), p)


# jupyter-server, ipykernel and their requirements (markers evaluated here), file by file.
def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


seen: set[str] = set()
todo = list(ROOTS)
while todo:
    name = norm(todo.pop())
    if name in seen:
        continue
    seen.add(name)
    dist = md.distribution(name)
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
    for f in dist.files or []:
        src = Path(dist.locate_file(f)).resolve()
        if not src.is_file():
            continue
        under = next((s for s in venv_site if src.is_relative_to(s)), None)
        if under is not None:
            add(f"{SITE}/{src.relative_to(under)}", src)
        elif src.is_relative_to(prefix) and src.relative_to(prefix).parts[0] in ("etc", "share"):
            # Jupyter's config (etc/jupyter/*.d: which server extensions load) and data files.
            add(str(base / src.relative_to(prefix)), src)

# Shared libraries of the interpreter and of every extension module, where ldd finds them.
libs: dict[str, Path] = {}
elves = [exe] + [p for p in files.values() if p.suffix == ".so" or ".so." in p.name]
for elf in elves:
    out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(?:\S+ => )?(/\S+) \(0x", line)
        if m and m.group(1) not in files:
            libs[m.group(1)] = Path(os.path.realpath(m.group(1)))
        elif "not found" in line:
            print(f"warning: {elf}: {line.strip()}", file=sys.stderr)
for target, src in libs.items():
    # Those of the copied trees (pyzmq.libs, found through $ORIGIN) come with them.
    if not any(src.is_relative_to(tree) for tree in [stdlib, *venv_site]):
        add(target, src)
# A shell (static busybox, as in the busybox test image) for debugging a running container.
busybox = Path("/bin/busybox")
if busybox.is_file():
    add("/bin/busybox", busybox)
    links["/bin/sh"] = "busybox"

text_files = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}
dirs = {"tmp": 0o1777, "workspace": 0o755, "proc": 0o755, "sys": 0o755, "dev": 0o755, "etc": 0o755, "root": 0o755}
for target in list(files) + list(links):
    for parent in Path(target.lstrip("/")).parents:
        if str(parent) != ".":
            dirs.setdefault(str(parent), 0o755)

with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
    for d in sorted(dirs):
        info = tarfile.TarInfo(d)
        info.type, info.mode = tarfile.DIRTYPE, dirs[d]
        tar.addfile(info)
    for target, src in sorted(files.items()):
        info = tar.gettarinfo(str(src), arcname=target.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(src, "rb") as fh:
            tar.addfile(info, fh)
    for target, dest in sorted(links.items()):
        info = tarfile.TarInfo(target.lstrip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, dest, 0o777
        tar.addfile(info)
    for target, content in text_files.items():
        data = content.encode()
        info = tarfile.TarInfo(target)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
print(f"{len(files)} files, {len(seen)} distributions", file=sys.stderr)
EOF

version="$(docker run --rm --network none "$IMAGE" python3 -m jupyter_server --version)"
size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
log "image $IMAGE built in $(printf '%.1f' "$(echo "$(date +%s.%N) - $started" | bc)")s: jupyter_server $version, $((size / 1024 / 1024)) MiB"
