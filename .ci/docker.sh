#!/usr/bin/env bash
# Make a Docker daemon and the local test image available for the docker executor tests.
# Idempotent: installs only what is missing, starts dockerd only when `docker info` fails, builds
# the image only when it is absent. Needs no registry: the image is imported from busybox-static.
#
# The image name is also in tests/dockerutil.py (TEST_IMAGE); keep the two in step.
set -euo pipefail

IMAGE="${FETCHML_TEST_IMAGE:-fetchml-test-busybox:latest}"
APPLETS="sh echo sleep cat dd head tail ls env sync mkdir rm true false printf kill ps touch wc
         seq yes test [ id pwd grep sed tr cut uname stat date"

log() { echo "== docker.sh: $*"; }

need_install=()
command -v dockerd >/dev/null 2>&1 || need_install+=(docker.io)
command -v docker >/dev/null 2>&1 || need_install+=(docker.io)
# The image needs a statically linked busybox (it runs in an otherwise empty root filesystem).
if ! { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }; then
    need_install+=(busybox-static)
fi
if [ "${#need_install[@]}" -gt 0 ]; then
    log "installing ${need_install[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2046
    apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_install[@]}" | sort -u) >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /tmp/dockerd.log)"
    # Its own session, no inherited output: it outlives this script and holds no CI pipe open.
    setsid nohup dockerd </dev/null >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up within 60 s; last lines of /tmp/dockerd.log:"
    tail -n 40 /tmp/dockerd.log >&2 || true
    exit 1
fi
log "docker $(docker version --format '{{.Server.Version}}') is up"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
else
    log "building $IMAGE from /bin/busybox"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/workspace" "$root/proc" "$root/sys" "$root/dev" "$root/etc"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for a in $APPLETS; do
        ln -sf busybox "$root/bin/$a"
    done
    tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
    log "image $IMAGE built"
fi
