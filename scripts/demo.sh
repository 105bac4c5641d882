#!/usr/bin/env bash
# `make demo`: the whole panel on this machine, with two fake libvirt hosts (alpha, beta).
#
# Starts the hosts and Redis, migrates, starts the inventory watcher and a Celery worker in
# the background (logs in $RUN_DIR/logs/), seeds demo data and serves with gunicorn until
# Ctrl-C; then everything it started is stopped. The SQLite database (db.sqlite3 unless
# DATABASE_URL says otherwise) survives, so running it again keeps users and history.
set -euo pipefail
# shellcheck source=scripts/run-dir.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run-dir.sh"
cd "$ROOT_DIR"
SCRIPTS=$ROOT_DIR/scripts
PORT=${VMPANEL_PORT:-8000}
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/demo

if pid_alive "$(read_pid "$PIDS/gunicorn.pid")" gunicorn; then
  die "a demo of this checkout is already running (gunicorn pid $(read_pid "$PIDS/gunicorn.pid")); run 'make stop' first"
fi

"$SCRIPTS/install.sh"

# The demo runs on the published demo key unless SECRET_KEY says otherwise; the panel
# refuses that key at start unless told this is the demo.
export VMPANEL_ALLOW_DEMO_SECRET=${VMPANEL_ALLOW_DEMO_SECRET:-true}

# shellcheck disable=SC2317 # only reached through the traps below
cleanup() {
  trap - INT TERM EXIT
  echo "demo.sh: stopping gunicorn, worker, watcher, hosts and redis" >&2
  "$SCRIPTS/stop.sh" || true
  wait 2>/dev/null || true # reap our children
}
# INT/TERM only exit; the EXIT trap does the stopping, whichever way we leave (including a
# failed step under set -e).
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of a demo killed with -9 would hold the port or the hosts.
"$SCRIPTS/stop.sh"
mkdir -p -- "$LOGS" "$PIDS"
rm -f -- "$PIDS/stopping"

# bg NAME CMD...: start CMD in the background in its own session (so stop.sh can end its
# whole process group, and a Ctrl-C reaches only this script, which then stops things in
# order), log to $LOGS/NAME.log, record its pid. setsid does not fork here (a background job
# of a script is no process group leader), so $! is the process itself.
bg() {
  local name=$1
  shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# supervise [--terminal] NAME CMD...: keep CMD running in the background. Each run is started
# like bg does (its own session, its pid in $PIDS/NAME.pid) and, whenever it exits, started
# again after a back-off (1, 2, 4 … 30 s; back to 1 s after a minute of good running), each
# restart said here and logged to $LOGS/supervisor.log. --terminal: its output comes here
# rather than to $LOGS/NAME.log. The loop's own pid is in $PIDS/NAME-supervisor.pid; stop.sh
# ends the loops first (they see $PIDS/stopping), then the processes.
supervise() {
  local to_terminal=0
  if [ "$1" = --terminal ]; then
    to_terminal=1
    shift
  fi
  local name=$1
  shift
  (
    trap '' INT # Ctrl-C is for demo.sh itself, which then stops everything in order
    delay=1
    while [ ! -e "$PIDS/stopping" ]; do
      started=$SECONDS
      if [ "$to_terminal" = 1 ]; then
        setsid "$@" </dev/null &
      else
        setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
      fi
      echo $! >"$PIDS/$name.pid"
      status=0
      wait $! || status=$?
      [ ! -e "$PIDS/stopping" ] || break
      if ((SECONDS - started >= 60)); then delay=1; fi
      echo "$(date -Is) $name exited with status $status; restarting in ${delay} s" >>"$LOGS/supervisor.log"
      echo "demo.sh: $name exited with status $status; restarting in ${delay} s" >&2
      sleep "$delay"
      delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done
  ) &
  echo $! >"$PIDS/$name-supervisor.pid"
}

# expect_alive NAME WORD: fail with the log tail when a background process died at start.
expect_alive() {
  if ! pid_alive "$(read_pid "$PIDS/$1.pid")" "$2"; then
    tail -n 30 "$LOGS/$1.log" >&2 || true
    die "$1 exited at start; see $LOGS/$1.log"
  fi
}

if [ "${VMPANEL_DEMO:-}" = qemu ]; then
  # `make demo-qemu`: two root libvirtd hosts with real QEMU guests (scripts/qemuhost.sh),
  # in a database of their own so the test-driver demo's data stays apart.
  [ "$(id -u)" = 0 ] || die "make demo-qemu needs root (privileged libvirtd, network namespaces)"
  "$SCRIPTS/qemuhost.sh" install
  "$SCRIPTS/qemu-guest.sh" build
  "$SCRIPTS/qemuhost.sh" up
  export DATABASE_URL=${DATABASE_URL:-sqlite:///$ROOT_DIR/db-qemu.sqlite3}
  export VMPANEL_QEMU_GUEST
  VMPANEL_QEMU_GUEST=$("$SCRIPTS/qemu-guest.sh" path)
  export VMPANEL_HOSTS
  VMPANEL_HOSTS="qa=$("$SCRIPTS/qemuhost.sh" uri qa),qb=$("$SCRIPTS/qemuhost.sh" uri qb)"
  export VMPANEL_MIGRATION_URIS
  VMPANEL_MIGRATION_URIS="qa=$("$SCRIPTS/qemuhost.sh" p2p-uri qa),qb=$("$SCRIPTS/qemuhost.sh" p2p-uri qb)"
elif [ "${VMPANEL_DEMO:-}" = cluster ]; then
  # `make demo-cluster`: the panel as several machines run it, on this one: four hosts, two
  # watchers sharing them through leases, two workers, two web processes. Kill a watcher
  # (kill -9 "$(cat "$PIDS/watcher.pid")") and watch the Hosts page: the other takes its
  # hosts within a lease, and the restarted one takes its share back.
  VMPANEL_HOSTS=
  for name in alpha beta gamma delta; do
    VMPANEL_HOSTS="${VMPANEL_HOSTS:+$VMPANEL_HOSTS,}$name=$("$SCRIPTS/testhost.sh" start "$name")"
  done
  export VMPANEL_HOSTS
  # Short, so that a takeover is quick to watch (the default is 15 s).
  export VMPANEL_LEASE_SECONDS=${VMPANEL_LEASE_SECONDS:-6}
  export VMPANEL_WEB_WORKERS=${VMPANEL_WEB_WORKERS:-2}
else
  ALPHA=$("$SCRIPTS/testhost.sh" start alpha)
  BETA=$("$SCRIPTS/testhost.sh" start beta)
  export VMPANEL_HOSTS="alpha=$ALPHA,beta=$BETA"
fi
"$SCRIPTS/redis.sh" start
export REDIS_URL="redis://127.0.0.1:${VMPANEL_REDIS_PORT:-6391}/0"
# Background logs should appear as they happen, not when a buffer fills.
export PYTHONUNBUFFERED=1
# Consoles: no front proxy in the demo, so pages reach the console proxy on its own port.
CONSOLE_PORT=${VMPANEL_CONSOLE_PORT:-8001}
export VMPANEL_CONSOLE_PORT=$CONSOLE_PORT
export VMPANEL_CONSOLE_URL=${VMPANEL_CONSOLE_URL:-ws://127.0.0.1:$CONSOLE_PORT/console/ws/}

.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput

# The watcher first: the test-driver daemons forget their domains when their last client
# disconnects, so the watcher must hold a connection to each host before seed_demo's own
# connection goes away. seed_demo registers the hosts, waits until the watcher has read
# each one, and only then makes the demo domains (re-runnable: the hosts come back empty
# each time while the database remembers).
if [ "${VMPANEL_DEMO:-}" = cluster ]; then
  # A connection to each host that outlives any watcher: a test-driver host forgets its VMs
  # when its last client goes, and a killed watcher may be its hosts' only client (real
  # hosts forget nothing). virsh prints the hosts' events to logs/keep-NAME.log meanwhile.
  for entry in ${VMPANEL_HOSTS//,/ }; do
    supervise "keep-${entry%%=*}" virsh -c "${entry#*=}" event --all --loop
  done
  supervise watcher-2 .venv/bin/python manage.py watch_inventory
  supervise worker-2 .venv/bin/celery -A vmpanel worker --loglevel=INFO --concurrency=2 \
    --hostname "worker2@%h"
fi
supervise watcher .venv/bin/python manage.py watch_inventory
supervise worker .venv/bin/celery -A vmpanel worker --loglevel=INFO --concurrency=2
supervise consoleproxy .venv/bin/python manage.py consoleproxy
.venv/bin/python manage.py seed_demo
expect_alive watcher watch_inventory
expect_alive worker celery
expect_alive consoleproxy consoleproxy

# gunicorn's output comes to this terminal; it is supervised like the others (a killed master
# comes back), and this script waits for its loop: bash runs a trap only once a foreground
# command returns, but interrupts `wait` at once. No control socket: its default path is in
# $HOME, shared by every checkout's demo.
echo
echo "vmpanel is at http://127.0.0.1:$PORT/  (other logs: $LOGS; Ctrl-C stops everything)"
# Threads (gthread) so that a request waiting (an action's short wait for its result, a
# bounded libvirt read) holds a thread, not a whole process; processes for the cores.
WEB_WORKERS=${VMPANEL_WEB_WORKERS:-$(($(nproc) + 1))}
WEB_THREADS=${VMPANEL_WEB_THREADS:-4}
if [ "${VMPANEL_DEMO:-}" = cluster ]; then
  # The second web process, as on a second web machine (the same database and Redis).
  supervise gunicorn-2 .venv/bin/gunicorn vmpanel.wsgi --bind "127.0.0.1:$((PORT + 10))" \
    --worker-class gthread --workers "$WEB_WORKERS" --threads "$WEB_THREADS" --no-control-socket
  echo "a second web process serves the same panel at http://127.0.0.1:$((PORT + 10))/"
  echo "kill a watcher (kill -9 \$(cat $PIDS/watcher.pid)) and watch Hosts: its hosts move within ${VMPANEL_LEASE_SECONDS} s"
fi
supervise --terminal gunicorn .venv/bin/gunicorn vmpanel.wsgi --bind "127.0.0.1:$PORT" \
  --worker-class gthread --workers "$WEB_WORKERS" --threads "$WEB_THREADS" \
  --access-logfile - --no-control-socket
status=0
wait "$(read_pid "$PIDS/gunicorn-supervisor.pid")" || status=$?
exit "$status"
