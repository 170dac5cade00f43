#!/usr/bin/env bash
# Make a PostgreSQL server available for the tests that run against PostgreSQL (tests/backends.py).
# Idempotent: installs only when the server binaries are missing, starts the cluster only when
# `pg_isready` does not answer, and (re)sets the postgres password every time.
#
# The tests connect with FETCHML_TEST_PG_URL, by default
# postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres; keep the two in step.
set -euo pipefail

PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_PASSWORD="${PG_PASSWORD:-postgres}"

log() { echo "== postgres.sh: $*"; }

have_server() {
    command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}

if ! have_server; then
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
fi

ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

if ! ready; then
    # The cluster on our port (Debian's postgresql-common; the package install creates one on
    # 5432); none yet: create one with the newest server version installed.
    cluster="$(pg_lsclusters --no-header 2>/dev/null | awk -v port="$PG_PORT" '$3 == port' | head -n 1 || true)"
    if [ -z "$cluster" ]; then
        version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
        log "creating cluster $version/${PG_CLUSTER:-main} on port $PG_PORT"
        pg_createcluster "$version" "${PG_CLUSTER:-main}" --port "$PG_PORT" >/dev/null
        cluster="$(pg_lsclusters --no-header | awk -v port="$PG_PORT" '$3 == port' | head -n 1)"
    fi
    read -r version name _ <<<"$cluster"
    log "starting cluster $version/$name"
    pg_ctlcluster "$version" "$name" start || service postgresql start || true
    for _ in $(seq 1 60); do
        ready && break
        sleep 1
    done
fi
if ! ready; then
    log "PostgreSQL did not answer on $PG_HOST:$PG_PORT within 60 s"
    pg_lsclusters >&2 || true
    tail -n 40 /var/log/postgresql/*.log >&2 || true
    exit 1
fi

# Password login over TCP (the default pg_hba.conf already allows md5/scram on 127.0.0.1).
if [ "$(id -u)" = 0 ]; then
    su postgres -c "psql -q -h /var/run/postgresql -p $PG_PORT -c \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\"" >/dev/null
else
    sudo -u postgres psql -q -h /var/run/postgresql -p "$PG_PORT" -c "ALTER USER postgres PASSWORD '$PG_PASSWORD'" >/dev/null
fi
PGPASSWORD="$PG_PASSWORD" psql -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1" >/dev/null
log "PostgreSQL $(PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SHOW server_version') is up on $PG_HOST:$PG_PORT"
