#!/usr/bin/env bash
# Stop whatever the demo of this checkout left running: gunicorn, Celery worker, inventory
# watcher, console proxy (by the pid files demo.sh writes), then every test host, then Redis.
#
#   scripts/stop.sh [--clean]     (--clean also removes the run folder and generated files)
#
# demo.sh calls this from its exit trap, and `make stop` calls it after a demo that was killed
# too hard to clean up after itself (kill -9, a closed terminal).
set -euo pipefail
# shellcheck source=scripts/run-dir.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run-dir.sh"
SCRIPTS=$ROOT_DIR/scripts

# The supervising loops of demo.sh first, so that they start nothing again (they also see
# the stopping mark), then the panel processes: they hold connections to the hosts and Redis.
# Each was started in its own process group, so the worker's pool children go with it.
if [ -d "$RUN_DIR/demo" ]; then
  touch "$RUN_DIR/demo/stopping"
  for pid_file in "$RUN_DIR"/demo/*-supervisor.pid; do
    [ -e "$pid_file" ] || continue
    pid=$(read_pid "$pid_file")
    # Never the demo.sh that called us (a recycled pid in a stale file could name it).
    [ -z "$pid" ] || [ "$pid" = "$PPID" ] || stop_pid "$pid" demo.sh || true
    rm -f -- "$pid_file"
  done
fi
# The -2 ones and the keep-NAME connections are `make demo-cluster`'s.
keepers=()
for pid_file in "$RUN_DIR"/demo/keep-*.pid; do
  if [ -e "$pid_file" ]; then keepers+=("$(basename -- "$pid_file" .pid):virsh"); fi
done
for proc in gunicorn:gunicorn gunicorn-2:gunicorn worker:celery worker-2:celery \
  watcher:watch_inventory watcher-2:watch_inventory consoleproxy:consoleproxy "${keepers[@]}"; do
  pid_file=$RUN_DIR/demo/${proc%%:*}.pid
  pid=$(read_pid "$pid_file")
  [ -z "$pid" ] || stop_pid "$pid" "${proc#*:}" group || true
  rm -f -- "$pid_file"
done

rm -f -- "$RUN_DIR/demo/stopping"

if [ -d "$RUN_DIR/hosts" ]; then
  for host_dir in "$RUN_DIR"/hosts/*/; do
    [ -d "$host_dir" ] || continue
    "$SCRIPTS/testhost.sh" stop "$(basename -- "$host_dir")"
  done
fi
# The real QEMU hosts of `make demo-qemu`, if it ran: guests off, daemons and namespaces gone.
if [ -d "$RUN_DIR/qemu" ]; then
  "$SCRIPTS/qemuhost.sh" down
fi
"$SCRIPTS/redis.sh" stop

if [ "${1:-}" = --clean ]; then
  # The database (db.sqlite3) and .venv stay: they are data and a slow download.
  rm -rf -- "$RUN_DIR" "$ROOT_DIR/staticfiles" "$ROOT_DIR/.pytest_cache" \
    "$ROOT_DIR/.ruff_cache" "$ROOT_DIR/test-results"
fi
