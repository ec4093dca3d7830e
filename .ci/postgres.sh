#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the test suite and print, on stdout,
#   export GWCTL_TEST_POSTGRES=postgresql://postgres@127.0.0.1:PORT/gwctl_test
# so that .ci/run can:   eval "$(bash .ci/postgres.sh)"
# Everything else goes to stderr. Idempotent: a server this script started
# earlier (state in $GWCTL_PG_STATE, default ${TMPDIR:-/tmp}/gwctl-ci-postgres)
# is reused while it answers; otherwise the state dir is wiped and rebuilt.
# Installs Debian's `postgresql` package first if no server binaries exist.
# Stop it with:  bash .ci/postgres.sh stop
set -euo pipefail

STATE="${GWCTL_PG_STATE:-${TMPDIR:-/tmp}/gwctl-ci-postgres}"
DB=gwctl_test

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_bindir() {
    local d
    if [ -n "${GWCTL_PG_BINDIR:-}" ] && [ -x "$GWCTL_PG_BINDIR/initdb" ]; then echo "$GWCTL_PG_BINDIR"; return 0; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    fi
    if command -v initdb >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v initdb)")")"
        if [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
    fi
    return 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

# The user the server runs as: ourselves, or (as root, since initdb refuses root)
# the `postgres` system user, or a `gwctltest` user created for the purpose.
server_user() {
    if [ "$(id -u)" != 0 ]; then echo ""; return 0; fi
    if id postgres >/dev/null 2>&1; then echo postgres; return 0; fi
    id gwctltest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin gwctltest >&2
    echo gwctltest
}

run_as() {  # run_as USER CMD...  (USER empty: as ourselves)
    local u="$1"; shift
    if [ -n "$u" ]; then runuser -u "$u" -- "$@"; else "$@"; fi
}

BINDIR="$(find_bindir || true)"

if [ "${1:-}" = stop ]; then
    if [ -n "$BINDIR" ] && [ -f "$STATE/user" ] && [ -d "$STATE/data" ]; then
        run_as "$(cat "$STATE/user")" "$BINDIR/pg_ctl" -D "$STATE/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$STATE"
    exit 0
fi

# Reuse a running server started by an earlier call.
if [ -n "$BINDIR" ] && [ -f "$STATE/port" ] && [ -f "$STATE/env" ]; then
    if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$(cat "$STATE/port")" -t 2 >/dev/null 2>&1; then
        say "reusing the server on port $(cat "$STATE/port")"
        cat "$STATE/env"
        exit 0
    fi
fi

if [ -z "$BINDIR" ]; then
    say "no PostgreSQL server binaries found; installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2 || die "apt-get update failed (run as root or with passwordless sudo)"
    as_root apt-get install -y -qq --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    BINDIR="$(find_bindir)" || die "postgresql installed but initdb/pg_ctl were not found"
fi
say "using $BINDIR"

USER_="$(server_user)"
# A previous server of ours may still hold the old data dir: stop it first.
if [ -d "$STATE/data" ] && [ -f "$STATE/user" ]; then
    run_as "$(cat "$STATE/user")" "$BINDIR/pg_ctl" -D "$STATE/data" -m immediate -w stop >/dev/null 2>&1 || true
fi
rm -rf "$STATE"
mkdir -p "$STATE"
chmod 700 "$STATE"
[ -n "$USER_" ] && chown "$USER_" "$STATE"
echo "$USER_" > "$STATE/user"

run_as "$USER_" "$BINDIR/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$STATE/initdb.log" 2>&1 || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
cat >>"$STATE/data/postgresql.conf" <<'EOF'

# gwctl CI server: loopback only, no durability needed
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

free_port() {
    if command -v python3 >/dev/null 2>&1 || command -v python >/dev/null 2>&1; then
        "$(command -v python3 || command -v python)" -c \
            'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    else
        echo $(( 20000 + RANDOM % 20000 ))
    fi
}

started=""
for attempt in 1 2 3; do
    PORT="$(free_port)"
    if run_as "$USER_" "$BINDIR/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -o "-p $PORT" -w -t 60 start >&2; then
        started=1
        break
    fi
    say "start on port $PORT failed (attempt $attempt)"
done
[ -n "$started" ] || { tail -n 40 "$STATE/server.log" >&2 || true; die "PostgreSQL did not start"; }
echo "$PORT" > "$STATE/port"

for _ in $(seq 1 100); do
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2 && break
    sleep 0.1
done
"$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 5 || die "PostgreSQL on port $PORT is not ready"

PSQL="$BINDIR/psql"; [ -x "$PSQL" ] || PSQL="$(command -v psql)"
"$PSQL" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $DB" >&2 || die "CREATE DATABASE failed"

echo "export GWCTL_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$PORT/$DB" > "$STATE/env"
say "PostgreSQL ready on 127.0.0.1:$PORT (database $DB)"
cat "$STATE/env"
