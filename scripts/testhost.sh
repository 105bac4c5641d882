#!/usr/bin/env bash
# A private libvirtd hosting libvirt's test driver: one daemon = one fake "host" of the panel.
#
#   scripts/testhost.sh start|stop|status|uri|clients NAME
#
# Why a daemon at all: test:///default in-process is private to one process, while Django, the
# Celery worker and the inventory watcher must see the same world. Clients connect with
# test+unix:///default?socket=<sock> (without "+unix" the socket is ignored).
#
# Why unprivileged: a root libvirtd also loads the QEMU driver and refuses to start without a
# libvirt-qemu user. So as root we drop to `nobody` with setpriv, in "session" mode with our
# own config, socket folder and pid file (see ../shared/reference/testdriver_daemon.sh).
# Run as another user, the daemon simply runs as that user.
#
# The test driver resets its world when its last client disconnects: whoever seeds domains
# must keep a connection open (the watcher in the demo, a session fixture in tests).
set -euo pipefail
# shellcheck source=scripts/run-dir.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run-dir.sh"

usage() { die "usage: $(basename -- "$0") start|stop|status|uri|clients NAME"; }
[ $# -eq 2 ] || usage
CMD=$1 NAME=$2
# NAME becomes a path and part of VMPANEL_HOSTS: keep it tame.
[[ $NAME =~ ^[a-z0-9][a-z0-9_-]{0,31}$ ]] || die "bad host name '$NAME' (use a-z, 0-9, _ and -)"

HOST_DIR=$RUN_DIR/hosts/$NAME
SOCK=$HOST_DIR/sock/libvirt-sock
PID_FILE=$HOST_DIR/run/libvirtd.pid
URI="test+unix:///default?socket=$SOCK"

if [ "$(id -u)" -eq 0 ]; then
  RUN_AS=nobody
  AS_DAEMON=(setpriv --reuid="$(id -u "$RUN_AS")" --regid="$(id -g "$RUN_AS")" --clear-groups)
else
  RUN_AS=$(id -un)
  AS_DAEMON=()
fi

running() { pid_alive "$(read_pid "$PID_FILE")" libvirtd; }

log_tail() {
  echo "--- tail of $HOST_DIR/log/libvirtd.log and daemon.out:" >&2
  tail -n 20 "$HOST_DIR/log/libvirtd.log" "$HOST_DIR/daemon.out" >&2 2>/dev/null || true
}

start() {
  if running; then
    echo "$URI"
    return 0
  fi
  # The host folder and the config stay root's; only the folders the daemon writes to are its
  # own, so the daemon cannot plant symlinks where root later writes.
  mkdir -p -- "$HOST_DIR"
  chmod 0755 "$RUN_DIR/hosts" "$HOST_DIR"
  local sub
  for sub in home run config cache sock log save; do
    mkdir -p -- "$HOST_DIR/$sub"
    chown "$RUN_AS:" "$HOST_DIR/$sub"
  done
  # save/ holds save images, which the daemon writes and the tests (root) read back.
  chmod 0755 "$HOST_DIR/save"
  if [ ${#AS_DAEMON[@]} -gt 0 ] && ! "${AS_DAEMON[@]}" test -w "$HOST_DIR/sock"; then
    die "$RUN_AS cannot reach $HOST_DIR; choose a VMPANEL_RUN_DIR outside /root (e.g. under /tmp)"
  fi
  # A leftover socket of a killed daemon would make the wait below succeed too early.
  rm -f -- "$SOCK" "$PID_FILE"

  cat >"$HOST_DIR/libvirtd.conf" <<CONF
# Written by scripts/testhost.sh: a private daemon for the test driver only.
unix_sock_dir = "$HOST_DIR/sock"
# Owner and group only; root clients pass anyway. No authentication: the folder is the fence.
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$HOST_DIR/log/libvirtd.log"
# Every gunicorn worker, Celery process, watcher and test opens its own connection.
max_clients = 200
CONF

  # env -i: a clean environment, so XDG_* and HOME point into the host folder and nothing of
  # the caller (LIBVIRT_DEFAULT_URI, a root HOME) leaks in. setsid: its own session, so a
  # Ctrl-C in the terminal that started it does not reach it.
  setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOST_DIR/home" \
    XDG_RUNTIME_DIR="$HOST_DIR/run" XDG_CONFIG_HOME="$HOST_DIR/config" \
    XDG_CACHE_HOME="$HOST_DIR/cache" \
    "${AS_DAEMON[@]}" /usr/sbin/libvirtd -f "$HOST_DIR/libvirtd.conf" -p "$PID_FILE" \
    >"$HOST_DIR/daemon.out" 2>&1 </dev/null &
  local launched=$! _
  for _ in $(seq 100); do
    # Ready once the socket exists and the pid file names a live libvirtd.
    if [ -S "$SOCK" ] && running; then
      echo "$URI"
      return 0
    fi
    # Dead already (bad config, lock held by another daemon): no point waiting 10 s.
    if ! proc_running "$launched"; then
      local status=0
      wait "$launched" || status=$?
      echo "$(basename -- "$0"): libvirtd for host '$NAME' exited at start (status $status)" >&2
      log_tail
      exit 1
    fi
    sleep 0.1
  done
  echo "$(basename -- "$0"): libvirtd for host '$NAME' did not create $SOCK within 10 s" >&2
  log_tail
  kill -TERM "$launched" 2>/dev/null || true
  exit 1
}

stop() {
  local pid
  pid=$(read_pid "$PID_FILE")
  if [ -n "$pid" ] && ! stop_pid "$pid" libvirtd; then
    die "libvirtd for host '$NAME' (pid $pid) would not exit"
  fi
  rm -f -- "$PID_FILE" "$SOCK"
}

case $CMD in
start) start ;;
stop) stop ;;
status)
  if running; then
    echo "host '$NAME' running, pid $(read_pid "$PID_FILE"), URI $URI"
  else
    echo "host '$NAME' not running"
    exit 1
  fi
  ;;
uri) echo "$URI" ;;
clients)
  # How many client connections the daemon holds: with none, the world is about to reset.
  # (Each accepted connection is a socket whose local address is our socket path.)
  ss -xH state connected src "$SOCK" | wc -l
  ;;
*) usage ;;
esac
