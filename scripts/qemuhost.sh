#!/usr/bin/env bash
# Two real libvirt "hosts" with the QEMU driver, for the qemu test tier and the QEMU demo.
#
#   scripts/qemuhost.sh install          # apt packages (only the missing ones), libvirt-qemu user
#   scripts/qemuhost.sh up [A B]         # start hosts A and B (default qa and qb); no-op when up
#   scripts/qemuhost.sh down             # destroy guests, stop everything, remove the run state
#   scripts/qemuhost.sh status           # exit 0 when both hosts are up
#   scripts/qemuhost.sh uri NAME         # what the panel connects to (from the root namespace)
#   scripts/qemuhost.sh p2p-uri NAME     # what another host's daemon uses to migrate to NAME
#   scripts/qemuhost.sh addr NAME        # NAME's address on the link between the two hosts
#   scripts/qemuhost.sh console-addr NAME  # NAME's address on its management link (below),
#                                        # which this makes first if it is not there yet
#   scripts/qemuhost.sh dir NAME         # NAME's folder (images/, save/, log/ …)
#   scripts/qemuhost.sh kill-daemon NAME # SIGKILL NAME's libvirtd (its guests run on), for
#                                        # fault tests: a host whose daemon died
#   scripts/qemuhost.sh start-daemon NAME  # start NAME's libvirtd again after kill-daemon
#
# Needs root. The guest to run on them comes from scripts/qemu-guest.sh.
#
# Each host is a root `libvirtd` in its own network namespace, mount namespace and UTS
# namespace (hostname = NAME). The two network namespaces are joined by a veth pair and
# nothing else: guests migrate between the hosts over a real TCP link, and no traffic can
# leave for anywhere else. On request (console-addr), a host also gets a management link to
# the root namespace (a veth pair of its own, a /30): what a panel machine reaches a remote
# host's consoles on. Only the guests' displays listen there (VNC, with a password; the
# panel's console address for the host); libvirtd does not. Not made by `up`: an interface
# appearing in the root namespace is a network change to everything there, and Chromium
# then fails the requests in flight (net::ERR_NETWORK_CHANGED: seen in a browser test while
# another run brought its hosts up). Names derive from a hash of the run folder, so two
# clones (or a demo and a test session of one clone) never share a namespace:
#   netns and veth end   vmp-<5 hex>-NAME            (<= 15 characters, an interface name)
#   addresses            10.99.<1..254>.1 (first host) and .2 (second), a /24 of their own
#   management link      vmm-<5 hex>-NAME in the root namespace, "mgmt" in the host's;
#                        10.98.<same>.1 (first host) / .2 (root), .5 (second) / .6 (root)
#   client URI           qemu:///system?socket=$RUN_DIR/qemu/NAME/run/libvirt-sock
#   peer-to-peer URI     qemu+tcp://<addr>/system   (libvirtd listens there, no auth)
#
# The daemon sees its host folder $RUN_DIR/qemu/NAME through bind mounts at the standard
# places, and paths in domain XML and in save/restore calls are opened by the daemon, so
# they must be written as the daemon sees them:
#   daemon's view                root namespace's view ($RUN_DIR/qemu/NAME/…)
#   /etc/libvirt                 etc/      libvirtd.conf, qemu.conf, domain definitions
#   /run/libvirt                 run/      sockets, pid file
#   /var/lib/libvirt             lib/      libvirt's own state (managed save images …)
#   /var/lib/libvirt/images      images/   disks; also the storage pool "images"
#   /var/lib/libvirt/save        save/     for virDomainSave/Restore
#   /var/log/libvirt             log/      libvirtd.log, qemu/<guest>.log, serial logs
# The same daemon path names a different folder on each host. That is what copy-storage
# migration needs (a guest's disk path is kept across a migration) and it is why disk paths
# must not point into $RUN_DIR directly. Everything else (the guest kernel in
# /var/cache/vmpanel-qemu, /tmp …) is shared with the root namespace.
#
# Why each setting is there: ../../shared/qemu-notes.md (traps 1-12) and the comments below.
set -euo pipefail
# shellcheck source=scripts/run-dir.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run-dir.sh"
PROG=$(basename -- "$0")

PACKAGES=(
  qemu-system-x86 qemu-utils # the emulator (TCG: KVM is unusable on these machines) and qemu-img
  libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-clients # virsh, to destroy guests on the way down
  busybox-static  # the guest's userland (scripts/qemu-guest.sh)
  iproute2        # ip netns, veth
)
DEFAULT_NAMES=(qa qb)
QDIR=$RUN_DIR/qemu
HASH=$(printf '%s' "$RUN_DIR" | sha1sum | cut -c1-5)
SUBNET=10.99.$((16#$HASH % 254 + 1))
MGMT_SUBNET=10.98.$((16#$HASH % 254 + 1))
# The daemon's folders, bound onto the host folder's sub-folders (daemon path:sub-folder).
# Order matters: images and save are mounted inside lib.
MOUNTS=(/etc/libvirt:etc /run/libvirt:run /var/lib/libvirt:lib /var/cache/libvirt:cache
  /var/log/libvirt:log /var/lib/libvirt/images:images /var/lib/libvirt/save:save)

usage() {
  die "usage: $PROG install | up [NAME NAME] | down | status | uri|p2p-uri|addr|console-addr|dir NAME"
}

check_name() {
  # A name ends up in the netns and interface names (15 characters at most), paths and URIs.
  [[ $1 =~ ^[a-z][a-z0-9]{0,4}$ ]] || die "bad host name '$1' (a-z then a-z/0-9, at most 5)"
}

# The pair `up` was last asked for, else the default one.
names() {
  if [ -f "$QDIR/names" ]; then
    cat "$QDIR/names"
  else
    echo "${DEFAULT_NAMES[*]}"
  fi
}

# index NAME: 0 for the first host of the pair, 1 for the second.
index() {
  local i=0 n
  for n in $(names); do
    [ "$n" = "$1" ] && {
      echo "$i"
      return 0
    }
    i=$((i + 1))
  done
  die "no host '$1' here (hosts: $(names))"
}

netns() { echo "vmp-$HASH-$1"; }
addr() { echo "$SUBNET.$(($(index "$1") + 1))"; }
mgmt_if() { echo "vmm-$HASH-$1"; }
console_addr() { echo "$MGMT_SUBNET.$(($(index "$1") * 4 + 1))"; }
root_mgmt_addr() { echo "$MGMT_SUBNET.$(($(index "$1") * 4 + 2))"; }
host_dir() { echo "$QDIR/$1"; }
sock() { echo "$QDIR/$1/run/libvirt-sock"; }
uri() { echo "qemu:///system?socket=$(sock "$1")"; }
# The source daemon opens this itself, inside its own namespace: a plain qemu:///system would
# be its own driver ("migrate guest to the same host"); the transport must be explicit.
p2p_uri() { echo "qemu+tcp://$(addr "$1")/system"; }
pid_file() { echo "$QDIR/$1/run/libvirtd.pid"; }

netns_exists() { [ -e "/run/netns/$(netns "$1")" ]; }
running() { pid_alive "$(read_pid "$(pid_file "$1")")" libvirtd && [ -S "$(sock "$1")" ]; }
host_up() {
  running "$1" && netns_exists "$1" &&
    ip -n "$(netns "$1")" -br addr show dev "$(netns "$1")" 2>/dev/null | grep -qF "$(addr "$1")/"
}

# The management link of host $1 (see the top), made once.
console_link() {
  local n=$1
  need_root
  netns_exists "$n" || die "host $n is not up"
  if ip -n "$(netns "$n")" -br addr show dev mgmt 2>/dev/null | grep -qF "$(console_addr "$n")/"; then
    return 0
  fi
  ip link del "$(mgmt_if "$n")" 2>/dev/null || true # a leftover of an earlier run
  ip link add "$(mgmt_if "$n")" type veth peer name mgmt netns "$(netns "$n")"
  ip addr add "$(root_mgmt_addr "$n")/30" dev "$(mgmt_if "$n")"
  ip link set "$(mgmt_if "$n")" up
  ip -n "$(netns "$n")" addr add "$(console_addr "$n")/30" dev mgmt
  ip -n "$(netns "$n")" link set mgmt up
}

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, a root libvirtd)"; }

install() {
  need_root
  local pkg missing=()
  for pkg in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$PROG: installing ${missing[*]}"
    apt-get update -qq
    # No recommends: they would bring the system libvirtd, dnsmasq, a firmware zoo.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # The QEMU driver refuses to load without this user even when qemu.conf says user = "root";
  # libvirt-daemon-system, which would create it, also brings the system daemon.
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 ||
    useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin -M libvirt-qemu
}

# The veth pair and both namespaces.
make_link() {
  local a=$1 b=$2 n
  for n in "$a" "$b"; do
    ip netns add "$(netns "$n")"
    netns "$n" >"$QDIR/$n/netns" # ours: `up` refuses a namespace without this
    ip -n "$(netns "$n")" link set lo up
  done
  # Created directly inside the namespaces: nothing appears, even briefly, in the root one.
  ip link add "$(netns "$a")" netns "$(netns "$a")" type veth peer name "$(netns "$b")" netns "$(netns "$b")"
  for n in "$a" "$b"; do
    ip -n "$(netns "$n")" addr add "$(addr "$n")/24" dev "$(netns "$n")"
    ip -n "$(netns "$n")" link set "$(netns "$n")" up
  done
}

write_config() {
  local name=$1 port=$2 d
  d=$(host_dir "$name")
  # A distinct host UUID: libvirt refuses to migrate to a host with the same one. The real
  # /sys DMI UUID is the same for both daemons, so it must be set.
  [ -s "$d/uuid" ] || cat /proc/sys/kernel/random/uuid >"$d/uuid"
  cat >"$d/etc/libvirtd.conf" <<CONF
# Written by scripts/qemuhost.sh for host '$name'.
host_uuid = "$(cat "$d/uuid")"
# The unix socket is for root clients in the root namespace (the panel, the tests).
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
# TCP without auth, for the other host's daemon (peer-to-peer migration). It listens only on
# the veth inside this host's own network namespace, which nothing but the peer can reach.
listen_tcp = 1
listen_tls = 0
listen_addr = "$(addr "$name")"
auth_tcp = "none"
# Every gunicorn worker, Celery process, watcher and test opens its own connection.
max_clients = 200
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
  cat >"$d/etc/qemu.conf" <<CONF
# Written by scripts/qemuhost.sh for host '$name'.
# No systemd, no AppArmor/SELinux labelling, no chown of images: run QEMU as root and leave
# files alone. stdio_handler "file": without systemd there is no virtlogd.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
# Incoming migrations listen on the veth (libvirt refuses loopback here), on ports that
# differ from the other host's so a mix-up shows as a refused connection, not a wrong peer.
migration_host = "$(addr "$name")"
migration_address = "$(addr "$name")"
migration_port_min = $port
migration_port_max = $((port + 63))
CONF
  # A directory pool over images/, started with the daemon: volumes can be made through the
  # API, and a copy-storage migration pre-creates a missing destination disk in it.
  mkdir -p -- "$d/etc/storage/autostart"
  [ -f "$d/etc/storage/images.xml" ] || cat >"$d/etc/storage/images.xml" <<XML
<pool type='dir'>
  <name>images</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <target><path>/var/lib/libvirt/images</path></target>
</pool>
XML
  ln -sfn /etc/libvirt/storage/images.xml "$d/etc/storage/autostart/images.xml"
}

# The root namespace's cgroup mounts, "type mountpoint options" per line (tmpfs included).
cgroup_mounts() {
  awk '$2 ~ /^\/sys\/fs\/cgroup(\/|$)/ { print $3, $2, $4 }' /proc/self/mounts
}

# Each host gets a cgroup of its own in every hierarchy, named like its netns, and a cgroup
# namespace rooted there. Without it, libvirt puts every guest of every daemon on the machine
# in /machine/qemu-<id>-<name>.libvirt-qemu: the first guest "g1" of qa and the first "g1"
# of qb (or of another clone) share one cgroup and getCPUStats returns their sum. It also
# makes the teardown exact: we remove our own cgroups and nothing else.
make_cgroups() {
  local cg=$1 fs mp opts
  while read -r fs mp opts; do
    case $fs in cgroup | cgroup2) ;; *) continue ;; esac
    mkdir -p -- "$mp/$cg"
    # A new v1 cpuset has no CPUs and no memory nodes, and no process may join it until it has.
    if [[ ,$opts, == *,cpuset,* ]]; then
      cat "$mp/cpuset.cpus" >"$mp/$cg/cpuset.cpus"
      cat "$mp/cpuset.mems" >"$mp/$cg/cpuset.mems"
    fi
  done <<<"$(cgroup_mounts)"
}

# enter_cgroups CG: move this (sub)shell into the host's cgroups.
enter_cgroups() {
  local cg=$1 fs mp opts
  while read -r fs mp opts; do
    case $fs in cgroup | cgroup2) echo "$BASHPID" >"$mp/$cg/cgroup.procs" ;; esac
  done <<<"$(cgroup_mounts)"
}

remove_cgroups() {
  local cg=$1 fs mp opts
  while read -r fs mp opts; do
    case $fs in cgroup | cgroup2) ;; *) continue ;; esac
    # Children first; rmdir refuses a cgroup that still holds a process, which is what we want.
    [ ! -d "$mp/$cg" ] || find "$mp/$cg" -depth -type d -exec rmdir {} + ||
      echo "$PROG: could not remove cgroup $mp/$cg" >&2
  done <<<"$(cgroup_mounts)"
}

# The script run inside the namespaces, as root, before exec'ing libvirtd. Arguments: host
# folder, hostname, the cgroup mounts (see cgroup_mounts), then the daemon path:sub-folder
# pairs.
# shellcheck disable=SC2016  # expanded by that shell
IN_NAMESPACE='set -eu
dir=$1 name=$2 cgroups=$3
shift 3
hostname "$name"
# `ip netns exec` mounted a fresh /sys (so /sys/class/net shows this namespace), which hides
# the cgroup mounts: libvirt would then run guests without cgroups and getCPUStats fails.
# Mounted again inside our cgroup namespace, each hierarchy shows the cgroup of this host as
# its root. The daemon goes one level down, so that the /machine of libvirt is its sibling (a
# cgroup v2 parent with controllers enabled may not hold processes itself).
echo "$cgroups" | while read -r fs mp opts; do
  [ -n "$fs" ] || continue
  mkdir -p "$mp"
  if ! mount -t "$fs" -o "$opts" "$fs" "$mp"; then
    echo "cannot mount $fs on $mp: no cgroup stats" >&2
    continue
  fi
  case $fs in cgroup | cgroup2) ;; *) continue ;; esac
  mkdir -p "$mp/daemon"
  case ",$opts," in *,cpuset,*)
    cat "$mp/cpuset.cpus" >"$mp/daemon/cpuset.cpus"
    cat "$mp/cpuset.mems" >"$mp/daemon/cpuset.mems"
    ;;
  esac
  echo $$ >"$mp/daemon/cgroup.procs"
done
for m in "$@"; do
  mount --bind "$dir/${m#*:}" "${m%%:*}"
done
# The same files as /etc/libvirt/libvirtd.conf and /run/libvirt/libvirtd.pid, named by their
# paths in the root namespace so that `ps` and `pgrep -af libvirtd` tell the daemons apart.
exec /usr/sbin/libvirtd --daemon --listen -f "$dir/etc/libvirtd.conf" -p "$dir/run/libvirtd.pid"'

start_daemon() {
  local name=$1 d m
  d=$(host_dir "$name")
  # The mount points must exist on the shared filesystem. They are never removed again: an
  # rmdir in the root namespace would detach the bind mounts of every other clone's daemon.
  for m in "${MOUNTS[@]}"; do
    case ${m%%:*} in
    /var/lib/libvirt/*) mkdir -p -- "$d/lib/${m#*:}" ;;
    *) mkdir -p -- "${m%%:*}" ;;
    esac
  done
  make_cgroups "$(netns "$name")"
  rm -f -- "$(sock "$name")" "$(pid_file "$name")"
  # --daemon returns once libvirtd has initialised (or failed to): no polling for a crash.
  # env -i: nothing of the caller (LIBVIRT_DEFAULT_URI, proxies) leaks into the daemon and
  # its QEMUs. setsid: a Ctrl-C in the caller's terminal does not reach them. 9>&-: libvirtd
  # keeps inherited descriptors, and would hold our lock for its whole life.
  # The subshell joins the host's cgroups first: `unshare --cgroup` roots the new cgroup
  # namespace wherever its caller is.
  if ! (
    enter_cgroups "$(netns "$name")"
    exec setsid --wait env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/libvirt LANG=C.UTF-8 \
      ip netns exec "$(netns "$name")" \
      unshare --mount --uts --cgroup --propagation private \
      /bin/sh -c "$IN_NAMESPACE" sh "$d" "$name" "$(cgroup_mounts)" "${MOUNTS[@]}"
  ) >"$d/daemon.out" 2>&1 </dev/null 9>&-; then
    echo "$PROG: libvirtd for host '$name' did not start" >&2
    tail -n 20 "$d/daemon.out" "$d/log/libvirtd.log" >&2 2>/dev/null || true
    return 1
  fi
  local _
  for _ in $(seq 100); do
    running "$name" && return 0
    sleep 0.1
  done
  echo "$PROG: libvirtd for host '$name' made no socket within 10 s" >&2
  tail -n 20 "$d/log/libvirtd.log" >&2 2>/dev/null || true
  return 1
}

up() {
  local a=${1:-${DEFAULT_NAMES[0]}} b=${2:-${DEFAULT_NAMES[1]}} n
  check_name "$a"
  check_name "$b"
  [ "$a" != "$b" ] || die "the two hosts need different names"
  need_root
  local sock_path
  sock_path=$(sock "$a")
  # sun_path holds 108 bytes; libvirt would fail later with a less obvious message.
  [ ${#sock_path} -lt 100 ] || die "run folder $RUN_DIR is too long for a unix socket path"
  mkdir -p -- "$QDIR"
  exec 9>"$QDIR/.lock"
  flock 9

  if [ -f "$QDIR/names" ] && [ "$(cat "$QDIR/names")" != "$a $b" ]; then
    die "hosts $(cat "$QDIR/names") are set up here; run '$PROG down' first"
  fi
  if host_up "$a" && host_up "$b"; then
    print_uris
    return 0
  fi
  for n in "$a" "$b"; do
    if netns_exists "$n" && [ "$(cat "$QDIR/$n/netns" 2>/dev/null)" != "$(netns "$n")" ]; then
      die "network namespace $(netns "$n") exists but not from $QDIR; run '$PROG down' first"
    fi
  done
  install
  # Half up (a daemon died, a namespace was deleted): start both from scratch rather than
  # patch a link whose other end is gone.
  if [ -f "$QDIR/names" ]; then
    echo "$PROG: hosts only partly up, restarting them" >&2
    teardown
  fi
  echo "$a $b" >"$QDIR/names"
  local port=49152
  for n in "$a" "$b"; do
    rm -rf -- "${QDIR:?}/$n"
    mkdir -p -- "$QDIR/$n"/{etc,run,lib,cache,log,images,save}
    write_config "$n" "$port"
    port=$((port + 64))
  done
  make_link "$a" "$b"
  for n in "$a" "$b"; do
    start_daemon "$n" || {
      teardown
      exit 1
    }
  done
  print_uris
}

print_uris() {
  local n
  for n in $(names); do
    echo "$n $(uri "$n")"
  done
}

# A guest left running keeps its QEMU running after libvirtd stops (and its disk open).
destroy_guests() {
  local name=$1 u dom
  u=$(uri "$name")
  # timeout: a wedged daemon must not hang the teardown; what survives is killed below.
  for dom in $(timeout 20 virsh -q -c "$u" list --all --name 2>/dev/null); do
    timeout 30 virsh -q -c "$u" destroy "$dom" >/dev/null 2>&1 || true
    timeout 20 virsh -q -c "$u" undefine "$dom" --managed-save --snapshots-metadata \
      >/dev/null 2>&1 || true
  done
}

# Everything `up` made, whatever state it is in. Works from the derived names alone, so a
# deleted run folder still gets its namespaces and processes cleaned up.
teardown() {
  local n pid pids ns _
  for n in $(names); do
    running "$n" && destroy_guests "$n"
    pid=$(read_pid "$(pid_file "$n")")
    [ -z "$pid" ] || stop_pid "$pid" libvirtd || true
  done
  # The pair's namespaces, and any other of this run folder's (a pair whose names file is gone).
  local all=()
  for n in $(names); do all+=("/run/netns/$(netns "$n")"); done
  all+=(/run/netns/"vmp-$HASH-"*)
  mapfile -t all < <(printf '%s\n' "${all[@]#/run/netns/}" | grep -v '\*' | sort -u)
  for ns in "${all[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    # Whatever still runs in the namespace is ours: a QEMU whose destroy failed, a daemon
    # whose pid file was lost.
    pids=$(ip netns pids "$ns")
    if [ -n "$pids" ]; then
      echo "$PROG: killing leftovers in $ns: $(echo "$pids" | tr '\n' ' ')" >&2
      # shellcheck disable=SC2086  # a list of pids
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 50); do
        [ -z "$(ip netns pids "$ns")" ] && break
        sleep 0.1
      done
      pids=$(ip netns pids "$ns")
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    # Also deletes the veth pair.
    ip netns del "$ns"
  done
  # After the processes: a cgroup that still holds one cannot go.
  for ns in "${all[@]}"; do
    remove_cgroups "$ns"
  done
  # The disks, save images and definitions are throwaway; a fresh `up` starts clean.
  for n in $(names); do
    rm -rf -- "${QDIR:?}/$n"
  done
  rm -f -- "$QDIR/names"
}

kill_daemon() {
  local name=$1 pid _
  need_root
  pid=$(read_pid "$(pid_file "$name")")
  pid_alive "$pid" libvirtd || die "libvirtd of host '$name' is not running"
  kill -KILL "$pid"
  for _ in $(seq 50); do
    if ! pid_alive "$pid" libvirtd; then
      # Its console locks (/var/lock/LCK.._pts_N hold the pid) would outlive it as long as
      # nothing reaps it, and refuse every console of the next daemon: gone with it, as a
      # reboot would clear them.
      local lock
      for lock in /var/lock/LCK..*; do
        [ -f "$lock" ] && [ "$(tr -d ' \n' <"$lock")" = "$pid" ] && rm -f -- "$lock"
      done
      return 0
    fi
    sleep 0.1
  done
  die "libvirtd of host '$name' (pid $pid) survived SIGKILL"
}

restart_daemon() {
  local name=$1
  need_root
  netns_exists "$name" || die "host '$name' is not up; run '$PROG up' first"
  running "$name" && return 0
  start_daemon "$name"
}

down() {
  need_root
  mkdir -p -- "$QDIR"
  exec 9>"$QDIR/.lock"
  flock 9
  teardown
  rm -rf -- "$QDIR"
}

status() {
  local n rc=0
  for n in $(names); do
    if host_up "$n"; then
      echo "$n up, pid $(read_pid "$(pid_file "$n")"), netns $(netns "$n"), $(addr "$n"), $(uri "$n")"
    else
      echo "$n down"
      rc=1
    fi
  done
  return $rc
}

[ $# -ge 1 ] || usage
CMD=$1
shift
case $CMD in
install) install ;;
up)
  [ $# -eq 0 ] || [ $# -eq 2 ] || usage
  up "$@"
  ;;
down) down ;;
status) status ;;
kill-daemon | start-daemon)
  [ $# -eq 1 ] || usage
  check_name "$1"
  index "$1" >/dev/null
  if [ "$CMD" = kill-daemon ]; then kill_daemon "$1"; else restart_daemon "$1"; fi
  ;;
uri | p2p-uri | addr | console-addr | dir)
  [ $# -eq 1 ] || usage
  check_name "$1"
  index "$1" >/dev/null
  case $CMD in
  uri) uri "$1" ;;
  p2p-uri) p2p_uri "$1" ;;
  addr) addr "$1" ;;
  console-addr)
    console_link "$1" >&2
    console_addr "$1"
    ;;
  dir) host_dir "$1" ;;
  esac
  ;;
*) usage ;;
esac
