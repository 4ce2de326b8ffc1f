#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the test run and prints the URL the tests read.
# Usage: source .ci/postgres.sh   (exports SECURECHAT_TEST_PG; stop it with `securechat_pg_stop`)
#    or: bash .ci/postgres.sh start|stop   (start prints the URL; the state lives in $SECURECHAT_PG_DIR)
# It installs nothing (the Debian package `postgresql` comes from .ci/run's apt list). The cluster runs as the
# `postgres` service user, never as root, on a data folder that user owns in a temp dir, with its socket and
# log inside that folder, on a local TCP port; `trust` authentication on loopback is fine for a cluster that
# lives only for one run and listens on 127.0.0.1 only.
set -euo pipefail

_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && echo "$d" && return 0
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
  return 1
}

_pg_as() {
  # Runs a command as the service user when we are root; as ourselves otherwise.
  if [ "$(id -u)" = "0" ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

securechat_pg_start() {
  local bin port dir
  bin="$(_pg_bin)" || { echo "postgres.sh: PostgreSQL is not installed (Debian package postgresql)" >&2; return 1; }
  if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
    echo "postgres.sh: no postgres service user (install the Debian package postgresql)" >&2
    return 1
  fi
  dir="${SECURECHAT_PG_DIR:-$(mktemp -d /tmp/securechat-pg.XXXXXX)}"
  mkdir -p "$dir/data"
  [ "$(id -u)" = "0" ] && chown -R postgres "$dir"
  chmod 700 "$dir/data"
  port="${SECURECHAT_PG_PORT:-$((20000 + RANDOM % 20000))}"
  _pg_as "'$bin/initdb' -D '$dir/data' -U postgres -A trust -E UTF8 --no-instructions >'$dir/initdb.log' 2>&1"
  _pg_as "'$bin/pg_ctl' -D '$dir/data' -l '$dir/data/server.log' -w -t 60 \
    -o \"-k '$dir/data' -p $port -c listen_addresses=127.0.0.1 -c max_connections=200\" start" >/dev/null
  export SECURECHAT_PG_DIR="$dir"
  export SECURECHAT_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
  echo "$SECURECHAT_TEST_PG" >"$dir/url"
}

securechat_pg_stop() {
  local bin dir="${SECURECHAT_PG_DIR:-}"
  [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
  bin="$(_pg_bin)" || return 0
  _pg_as "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
  rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-start}" in
    start) securechat_pg_start && echo "$SECURECHAT_TEST_PG" ;;
    stop) securechat_pg_stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
  esac
fi
