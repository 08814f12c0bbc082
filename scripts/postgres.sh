#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests, without Docker.
#
#   scripts/postgres.sh start DATA_DIR PORT   initdb DATA_DIR/pgdata once, start on 127.0.0.1:PORT, create the
#                                             database oligocds and print postgresql://postgres@127.0.0.1:PORT/oligocds
#   scripts/postgres.sh stop DATA_DIR         fast shutdown (immediate after PG_STOP_TIMEOUT seconds, default 30)
#   scripts/postgres.sh status DATA_DIR       exit 0 and print the DSN while it runs, else exit 3
#
# The server binaries come from /usr/lib/postgresql/*/bin (the newest major there); when there are none, the
# Debian package `postgresql` is installed. PostgreSQL refuses to run as root, so as root initdb and pg_ctl run
# as the `postgres` system user (created if missing) and DATA_DIR is chowned to it: every parent of DATA_DIR must be
# searchable by that user (a fresh `mktemp -d` under /tmp is). Trust auth on 127.0.0.1, no durability (fsync=off):
# for tests only. The unix socket lives in DATA_DIR (disabled when that path is too long for a socket).
set -euo pipefail

DB_NAME=oligocds
DB_USER=postgres

die() { echo "postgres.sh: $*" >&2; exit 1; }
log() { echo "postgres.sh: $*" >&2; }

find_bin_dir() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || continue
    if [[ -z "$best" ]] || (($(basename "$(dirname "$dir")") > $(basename "$(dirname "$best")"))); then
      best="$dir"
    fi
  done
  [[ -n "$best" ]] && echo "$best"
}

as_root() {
  if ((EUID == 0)); then
    "$@"
  else
    command -v sudo >/dev/null || die "not root and no sudo: install PostgreSQL yourself (apt-get install postgresql)"
    sudo "$@"
  fi
}

ensure_binaries() {
  if BIN="$(find_bin_dir)"; then
    return 0
  fi
  log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: installing the Debian package"
  command -v apt-get >/dev/null || die "no apt-get: install the PostgreSQL server (initdb, pg_ctl) yourself"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
  BIN="$(find_bin_dir)" || die "apt-get install postgresql brought no server binaries"
}

# Runs a server binary as the user that owns the cluster: `postgres` when we are root, else ourselves.
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

ensure_pg_user() {
  ((EUID == 0)) || return 0
  id -u postgres >/dev/null 2>&1 && return 0
  log "creating the system user postgres"
  useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /bin/bash postgres
}

args() {
  [[ $# -ge 1 && -n "$1" ]] || die "DATA_DIR missing"
  mkdir -p "$1"
  DATA_DIR="$(cd "$1" && pwd)"
  PGDATA_DIR="$DATA_DIR/pgdata"
  PORT="${2:-}"
  if [[ -z "$PORT" && -f "$DATA_DIR/port" ]]; then
    PORT="$(cat "$DATA_DIR/port")"
  fi
}

dsn() { echo "postgresql://$DB_USER@127.0.0.1:$1/$DB_NAME"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

is_running() { [[ -f "$PGDATA_DIR/PG_VERSION" ]] && as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

cmd_start() {
  args "$@"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "usage: $0 start DATA_DIR PORT"
  ensure_binaries
  ensure_pg_user
  if ((EUID == 0)); then
    chown -R postgres: "$DATA_DIR"
    as_pg test -w "$DATA_DIR" || die "the postgres user cannot write $DATA_DIR: a parent directory is not searchable by it"
  fi
  if is_running; then
    log "already running for $DATA_DIR"
    dsn "$(cat "$DATA_DIR/port")"
    return 0
  fi
  port_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use"

  if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
    as_pg "$BIN/initdb" -D "$PGDATA_DIR" -U "$DB_USER" -A trust -E UTF8 --no-locale --no-sync \
      >"$DATA_DIR/initdb.log" 2>&1 || { cat "$DATA_DIR/initdb.log" >&2; die "initdb failed"; }
    echo "include 'oligocds.conf'" >>"$PGDATA_DIR/postgresql.conf"
  fi
  local socket_dir="$DATA_DIR"
  # sun_path holds 107 bytes: "<dir>/.s.PGSQL.<port>" must fit
  ((${#socket_dir} + 20 > 107)) && socket_dir=""
  cat >"$PGDATA_DIR/oligocds.conf" <<EOF
# written by scripts/postgres.sh start: a test server, no durability
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$socket_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  ((EUID == 0)) && chown postgres: "$PGDATA_DIR/oligocds.conf"
  echo "$PORT" >"$DATA_DIR/port"

  if ! as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$DATA_DIR/postgres.log" -w -t 60 start >/dev/null; then
    tail -n 40 "$DATA_DIR/postgres.log" >&2 || true
    die "the server did not start (log above, in $DATA_DIR/postgres.log)"
  fi
  local deadline=$((SECONDS + 30))
  until "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres; do
    ((SECONDS < deadline)) || die "the server does not accept connections on 127.0.0.1:$PORT"
    sleep 0.1
  done
  if [[ "$("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -XtAc \
    "select 1 from pg_database where datname = '$DB_NAME'")" != 1 ]]; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" "$DB_NAME"
  fi
  log "server up (data in $PGDATA_DIR)"
  dsn "$PORT"
}

cmd_stop() {
  args "$@"
  BIN="$(find_bin_dir)" || { log "no PostgreSQL binaries: nothing to stop"; return 0; }
  if ! is_running; then
    log "not running ($DATA_DIR)"
    return 0
  fi
  if ! as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t "${PG_STOP_TIMEOUT:-30}" stop >/dev/null; then
    log "no fast shutdown: immediate"
    as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null
  fi
  log "stopped ($DATA_DIR)"
}

cmd_status() {
  args "$@"
  if BIN="$(find_bin_dir)" && is_running; then
    dsn "$(cat "$DATA_DIR/port")"
    return 0
  fi
  echo "not running ($DATA_DIR)"
  return 3
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: $0 start DATA_DIR PORT | stop DATA_DIR | status DATA_DIR" ;;
esac
