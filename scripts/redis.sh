#!/usr/bin/env bash
# A private Redis for this checkout (Celery broker and result store, per-domain locks).
#
#   scripts/redis.sh start|stop|status
#
# Private so the demo and the tests never share queues or locks with each other or with the
# machine's own Redis on 6379, which this script never touches. It keeps an append-only file
# in its folder: a Redis restarted under a running panel still has the queued operations'
# messages (the database holds their state; a lost message is settled by the panel, but
# later).
set -euo pipefail
# shellcheck source=scripts/run-dir.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run-dir.sh"

PORT=${VMPANEL_REDIS_PORT:-6391}
DIR=$RUN_DIR/redis
PID_FILE=$DIR/redis.pid

[[ $PORT =~ ^[0-9]+$ ]] || die "VMPANEL_REDIS_PORT must be a port number, not '$PORT'"
[ "$PORT" != 6379 ] || die "port 6379 is the system Redis; choose another VMPANEL_REDIS_PORT"

running() { pid_alive "$(read_pid "$PID_FILE")" redis-server; }
pong() { [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; }

start() {
  if running; then
    # Same run folder, different VMPANEL_REDIS_PORT: say so rather than hand out a dead URL.
    pong || die "the Redis of $RUN_DIR (pid $(read_pid "$PID_FILE")) does not answer on port $PORT"
    return 0
  fi
  # Something else answers on our port: starting would fail, stopping it is not ours to do.
  if pong; then
    die "another Redis already answers on 127.0.0.1:$PORT; set VMPANEL_REDIS_PORT"
  fi
  mkdir -p -- "$DIR"
  rm -f -- "$PID_FILE"
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
    --dir "$DIR" --pidfile "$PID_FILE" --logfile "$DIR/redis.log" --daemonize yes
  local _
  for _ in $(seq 100); do
    pong && return 0
    sleep 0.1
  done
  echo "$(basename -- "$0"): redis on 127.0.0.1:$PORT did not answer PING within 10 s" >&2
  tail -n 20 "$DIR/redis.log" >&2 2>/dev/null || true
  exit 1
}

stop() {
  # By pid, never by port: whatever else listens there is left alone.
  local pid
  pid=$(read_pid "$PID_FILE")
  if [ -n "$pid" ] && ! stop_pid "$pid" redis-server; then
    die "redis-server (pid $pid) would not exit"
  fi
  rm -f -- "$PID_FILE"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status)
  if running && pong; then
    echo "redis running, pid $(read_pid "$PID_FILE"), redis://127.0.0.1:$PORT/0"
  else
    echo "redis not running on 127.0.0.1:$PORT"
    exit 1
  fi
  ;;
*) die "usage: $(basename -- "$0") start|stop|status" ;;
esac
