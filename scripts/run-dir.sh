# shellcheck shell=bash
# Sourced by the other scripts: sets ROOT_DIR (the checkout) and RUN_DIR (sockets, pid files,
# logs of the private daemons of this checkout) plus a few helpers.
#
# RUN_DIR is $VMPANEL_RUN_DIR when set (the test fixtures use their own), otherwise
# /tmp/vmpanel-<sha1 of the checkout path, 8 hex>: two clones never share daemons, and it lives
# under /tmp because the libvirtd user (nobody) cannot reach a checkout under /root.

ROOT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

die() {
  echo "$(basename -- "$0"): $*" >&2
  exit 1
}

if [ -z "${VMPANEL_RUN_DIR:-}" ]; then
  VMPANEL_RUN_DIR=/tmp/vmpanel-$(printf '%s' "$ROOT_DIR" | sha1sum | cut -c1-8)
fi
export VMPANEL_RUN_DIR
RUN_DIR=$VMPANEL_RUN_DIR

mkdir -p -- "$RUN_DIR" || die "cannot create run folder $RUN_DIR"
# /tmp is shared: refuse a folder someone else planted (or a symlink) before we write pid files
# into it and run things as root from it.
if [ -L "$RUN_DIR" ] || [ ! -O "$RUN_DIR" ]; then
  die "run folder $RUN_DIR is not a folder owned by $(id -un); remove it or set VMPANEL_RUN_DIR"
fi
# 0755 whatever the umask: the daemon user must be able to traverse it to its own sub-folders.
chmod 0755 -- "$RUN_DIR"

# pid_alive PID WORD: PID is a live process whose command line contains WORD. Checking the
# command line guards against a recycled pid; a zombie has an empty one, so counts as gone.
pid_alive() {
  local pid=$1 word=$2 cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$word"* ]]
}

# proc_running PID: PID exists and is not a zombie. For a child we just forked, whose command
# line is still the forking shell's until it execs.
proc_running() {
  local stat
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
  stat=${stat##*) } # the state letter follows the command name, which may hold anything
  [ "${stat%% *}" != Z ]
}

# read_pid FILE: the pid in FILE, or nothing.
read_pid() {
  [ -f "$1" ] && tr -dc '0-9' <"$1"
  return 0
}

# stop_pid PID WORD [GROUP]: SIGTERM, wait up to 10 s for it to go, then SIGKILL. With GROUP=group
# the whole process group PID leads is signalled (a Celery worker's pool children too).
stop_pid() {
  local pid=$1 word=$2 target=$1
  [ "${3:-}" = group ] && target=-$1
  pid_alive "$pid" "$word" || return 0
  kill -TERM -- "$target" 2>/dev/null || true
  for _ in $(seq 100); do
    pid_alive "$pid" "$word" || return 0
    sleep 0.1
  done
  echo "$(basename -- "$0"): $word (pid $pid) ignored SIGTERM for 10 s, killing it" >&2
  kill -KILL -- "$target" 2>/dev/null || true
  for _ in $(seq 20); do
    pid_alive "$pid" "$word" || return 0
    sleep 0.1
  done
  return 1
}
