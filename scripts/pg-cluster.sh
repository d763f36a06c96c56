#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#
#   scripts/pg-cluster.sh start DIR   creates a cluster in DIR (new or empty), starts it on a free
#                                     127.0.0.1 port, waits until it accepts connections and
#                                     prints its DATABASE_URL on stdout
#   scripts/pg-cluster.sh stop DIR    stops it and removes DIR
#
# Trust authentication on loopback only, fsync off: for tests, never for data you want to keep.
# As root the server runs as the unprivileged `postgres` user (PostgreSQL refuses to run as
# root), so DIR and its parent folders must be reachable by that user (mktemp -d is fine).
set -euo pipefail

die() {
    printf 'pg-cluster: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { die "usage: scripts/pg-cluster.sh start|stop DIR"; }

[[ $# -eq 2 ]] || usage
CMD=$1
DIR=$2
MARKER=.gatehouse-pg-cluster

# The server programs: on PATH, else Debian's newest /usr/lib/postgresql/N/bin.
pg_bin() {
    local prog=$1 found
    if found=$(command -v "$prog"); then
        echo "$found"
        return
    fi
    found=$(printf '%s\n' /usr/lib/postgresql/*/bin/"$prog" | sort -V | tail -n 1)
    [[ -x $found ]] || die "$prog not found on PATH nor in /usr/lib/postgresql/*/bin (run scripts/setup.sh test)"
    echo "$found"
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local initdb pg_ctl pg_isready
    initdb=$(pg_bin initdb)
    pg_ctl=$(pg_bin pg_ctl)
    pg_isready=$(pg_bin pg_isready 2>/dev/null) || pg_isready=""

    if [[ -e $DIR ]]; then
        [[ -d $DIR && -z $(ls -A "$DIR") ]] || die "$DIR exists and is not an empty folder"
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    touch "$DIR/$MARKER"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (run scripts/setup.sh test)"
        chown -R postgres: "$DIR"
        as_owner test -w "$DIR" || die "user postgres cannot write to $DIR (are its parent folders private to root?)"
    fi
    chmod 700 "$DIR"

    as_owner "$initdb" --pgdata="$DIR/data" --username=postgres --auth-local=trust --auth-host=trust \
        --encoding=UTF8 --no-locale --no-sync >"$DIR/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -n 20 "$DIR/initdb.log")"

    # A free port: pick one nothing listens on, and try another if the server still cannot bind it.
    local port attempt started=""
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        port_in_use "$port" && continue
        {
            echo "# added by scripts/pg-cluster.sh (attempt $attempt)"
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $port"
            echo "unix_socket_directories = '$DIR'"
            echo "max_connections = 200"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        } >>"$DIR/data/postgresql.conf"
        if as_owner "$pg_ctl" --pgdata="$DIR/data" --log="$DIR/server.log" --wait --timeout=60 start >/dev/null 2>&1; then
            started=1
            break
        fi
        grep -q 'could not bind\|Address already in use' "$DIR/server.log" 2>/dev/null ||
            die "the server did not start: $(tail -n 20 "$DIR/server.log" 2>/dev/null)"
    done
    [[ -n $started ]] || die "no free port found after $attempt attempts"
    echo "$port" >"$DIR/port"

    # pg_ctl --wait already waited for the server to be ready; check a TCP connection too.
    local ready=""
    for _ in $(seq 1 60); do
        if [[ -n $pg_isready ]]; then
            "$pg_isready" --quiet --host=127.0.0.1 --port="$port" --username=postgres && ready=1 && break
        else
            port_in_use "$port" && ready=1 && break
        fi
        sleep 0.5
    done
    [[ -n $ready ]] || die "the server on 127.0.0.1:$port does not accept connections: $(tail -n 20 "$DIR/server.log")"

    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
    [[ -d $DIR ]] || return 0
    [[ -e $DIR/$MARKER ]] || die "$DIR is not a cluster made by scripts/pg-cluster.sh; not touching it"
    if [[ -f $DIR/data/postmaster.pid ]]; then
        local pg_ctl
        pg_ctl=$(pg_bin pg_ctl)
        as_owner "$pg_ctl" --pgdata="$DIR/data" --mode=fast --wait --timeout=30 stop >/dev/null 2>&1 ||
            as_owner "$pg_ctl" --pgdata="$DIR/data" --mode=immediate --wait --timeout=30 stop >/dev/null 2>&1 ||
            echo "pg-cluster: warning: could not stop the server in $DIR" >&2
    fi
    rm -rf "$DIR"
}

case $CMD in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
