#!/usr/bin/env bash
# Local PostgreSQL, Redis and an S3 server (moto) on loopback, for the cluster profile's integration tests,
# its benchmark and trying the profile on one machine. Idempotent: a running service is left alone.
#   deploy/services.sh start   install what is missing (apt, as root), start, print the exports
#   deploy/services.sh env     print the exports (eval "$(deploy/services.sh env)")
#   deploy/services.sh stop    stop what start started
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${LROUTER_SERVICES_DIR:-/tmp/lrouter-services}
PG_PORT=${LROUTER_PG_PORT:-55432}
REDIS_PORT=${LROUTER_REDIS_PORT:-56379}
S3_PORT=${LROUTER_S3_PORT:-55000}
VENV=${VENV:-.venv}

log() { echo "[services] $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  log "$2 did not open port $1"; return 1
}
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

install_missing() {
  local pkgs=()
  [ -n "$(pg_bin)" ] || pkgs+=(postgresql)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing ${pkgs[*]}: install them (needs root and apt-get)"; return 1
  fi
  log "installing ${pkgs[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  # the Debian packages start their own default clusters on the standard ports; ours use other ports
}

start_pg() {
  port_open "$PG_PORT" && { log "postgres already on $PG_PORT"; return 0; }
  local bin; bin=$(pg_bin)
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  if [ ! -f "$DIR/pg/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$DIR/pg" -U lrouter --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$DIR/pg" -l "$DIR/pg.log" -w -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $DIR -c fsync=off -c max_connections=200" start >/dev/null
  as_pg "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U lrouter -d postgres -tAc "select 1 from pg_database where datname='dagster'" | grep -q 1 \
    || as_pg "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U lrouter dagster
  log "postgres on 127.0.0.1:$PG_PORT"
}

start_redis() {
  port_open "$REDIS_PORT" && { log "redis already on $REDIS_PORT"; return 0; }
  mkdir -p "$DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
  wait_port "$REDIS_PORT" redis
  log "redis on 127.0.0.1:$REDIS_PORT"
}

start_s3() {
  port_open "$S3_PORT" && { log "S3 (moto) already on $S3_PORT"; return 0; }
  [ -x "$VENV/bin/moto_server" ] || { log "no $VENV/bin/moto_server: pip install -e '.[dev,cluster]'"; return 1; }
  mkdir -p "$DIR"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$DIR/moto.log" 2>&1 &
  echo $! >"$DIR/moto.pid"
  wait_port "$S3_PORT" moto_server
  log "S3 (moto) on 127.0.0.1:$S3_PORT"
}

print_env() {
  cat <<ENV
export LROUTER_TEST_PG_URL=postgresql+psycopg2://lrouter@127.0.0.1:$PG_PORT/dagster
export LROUTER_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export LROUTER_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
ENV
}

stop_all() {
  local bin; bin=$(pg_bin)
  if [ -n "$bin" ] && [ -f "$DIR/pg/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null || true
  fi
  for f in redis moto; do
    if [ -f "$DIR/$f.pid" ]; then kill "$(cat "$DIR/$f.pid")" 2>/dev/null || true; rm -f "$DIR/$f.pid"; fi
  done
  log "stopped"
}

case "${1:-start}" in
  start) install_missing; start_pg; start_redis; start_s3; print_env ;;
  env) print_env ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
