#!/usr/bin/env bash
# The tiny guest of the "qemu" test tier and the QEMU demo: a Debian kernel plus a busybox
# initramfs, booted directly by QEMU (no disk image to install, no bootloader).
#
#   scripts/qemu-guest.sh build     # build once into the cache (minutes the first time, then a no-op)
#   scripts/qemu-guest.sh path      # print the cache folder
#
# The cache is ${VMPANEL_QEMU_CACHE:-/var/cache/vmpanel-qemu}, outside the checkout: the kernel
# package is a 70 MB download, every clone can share the result, and a checkout under /root
# may not be reachable by whoever reads it. It holds:
#   vmlinuz       the kernel of Debian's linux-image-amd64 (taken out of the .deb, not installed)
#   initrd.gz     busybox + the virtio, button and evdev modules + the init below (~1.3 MB)
#   mods/         those modules, kept so a changed init rebuilds without a new download
#   stamp         what initrd.gz was built from; a mismatch (this script changed) rebuilds it
#
# Boot it with <kernel>CACHE/vmlinuz</kernel><initrd>CACHE/initrd.gz</initrd>
# <cmdline>console=ttyS0 quiet panic=-1</cmdline>, a serial console to a file, an optional
# virtio disk vda and <memballoon model='virtio'><stats period='2'/></memballoon>; 128–256 MiB.
# Under TCG it boots in about 10 s. What the init prints on the serial console, for tests to
# wait for:
#   GUEST-BOOT-OK uptime=…        modules loaded, acpid running
#   GUEST-DISK vda ok             vda readable (GUEST-DISK none without a disk)
#   GUEST-ALIVE <n> uptime=… cpus=…   every 2 s; it also writes a block of vda each time, so a
#                                 migration copies a disk that changes, and onlines hot-plugged
#                                 vCPUs (the kernel leaves them offline)
#   GUEST-POWEROFF                on the ACPI power button (virDomainShutdown), then poweroff -f
#   GUEST-ECHO <line>             every line typed on the serial console, echoed back
# Load for the usage graphs, switched on by words on the kernel command line (<cmdline>):
#   vmpanel.burn=1      a busy loop keeps one vCPU near 100 %; prints GUEST-BURN started
#   vmpanel.readdisk=1  reads 16 MiB of vda every second, bypassing the page cache; prints
#                       GUEST-READDISK started (GUEST-READDISK none without a disk)
#   vmpanel.fillmem=N   keeps N MiB of random data in memory (a tmpfs), as a guest at work
#                       holds its memory: what a snapshot or save must write; prints
#                       GUEST-FILLMEM N
# (vmpanel.install=1 is phase 1 of a two-phase boot: GUEST-INSTALL-DONE once vda answers, then
# poweroff -f.)
set -euo pipefail
PROG=$(basename -- "$0")
die() {
  echo "$PROG: $*" >&2
  exit 1
}

CACHE=${VMPANEL_QEMU_CACHE:-/var/cache/vmpanel-qemu}
# Load order matters: insmod does not resolve dependencies.
MODS=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  failover net_failover virtio_net virtio_blk virtio_balloon button evdev)
# qemu-utils: qemu-img, for the disks the callers give the guest.
PACKAGES=(busybox-static qemu-utils)

# The init of the initramfs. busybox's init would want inittab and a tty; a shell script as
# pid 1 is all a test guest needs. It must never exit (the kernel panics, panic=-1 reboots).
# shellcheck disable=SC2016  # expanded by the guest's shell, not here
INIT='#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules-order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
# busybox acpid runs /etc/acpi/PWRF/00000080 on the power button: virDomainShutdown works
acpid -c /etc/acpi -l /tmp/acpid.log
echo "GUEST-BOOT-OK uptime=$(cut -d" " -f1 /proc/uptime)" >/dev/console
ip link set lo up
[ -e /sys/class/net/eth0 ] && ip link set eth0 up
if [ -b /dev/vda ] && dd if=/dev/vda of=/dev/null bs=64k count=16 2>/dev/null; then
  echo "GUEST-DISK vda ok" >/dev/console
else
  echo "GUEST-DISK none" >/dev/console
fi
# Phase 1 of a two-phase direct kernel boot: the "installer" is done once the disk answers,
# and powers off as a real installer would (the panel then defines phase 2).
if grep -qw vmpanel.install=1 /proc/cmdline; then
  echo GUEST-INSTALL-DONE >/dev/console
  sync
  poweroff -f
fi
# Load on request, for the usage graphs: one vCPU kept busy (niced, so the loop below and acpid
# still run on time), and the disk read continuously (O_DIRECT, so every pass reaches vda and
# not the page cache; dropping the caches first if dd cannot open it that way).
if grep -qw vmpanel.burn=1 /proc/cmdline; then
  while :; do :; done &
  renice -n 19 -p $! >/dev/null 2>&1
  echo "GUEST-BURN started" >/dev/console
fi
if grep -qw vmpanel.readdisk=1 /proc/cmdline; then
  if [ -b /dev/vda ]; then
    while :; do
      dd if=/dev/vda of=/dev/null bs=1M count=16 iflag=direct 2>/dev/null || {
        echo 3 >/proc/sys/vm/drop_caches
        dd if=/dev/vda of=/dev/null bs=1M count=16
      } 2>/dev/null
      sleep 1
    done &
    echo "GUEST-READDISK started" >/dev/console
  else
    echo "GUEST-READDISK none" >/dev/console
  fi
fi
for word in $(cat /proc/cmdline); do
  case $word in vmpanel.fillmem=[0-9]*) fill=${word#vmpanel.fillmem=} ;; esac
done
if [ -n "${fill:-}" ]; then
  mkdir -p /fill
  mount -t tmpfs -o size=${fill}m tmpfs /fill
  dd if=/dev/urandom of=/fill/data bs=1M count="$fill" 2>/dev/null
  echo "GUEST-FILLMEM $fill" >/dev/console
fi
# A line typed on the serial console comes back, so that a console can be tested for real.
(while read -r line; do echo "GUEST-ECHO $line" >/dev/console; done </dev/console) &
i=0
while true; do
  i=$((i + 1))
  for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
    [ -f "$c" ] && [ "$(cat "$c")" = 0 ] && echo 1 >"$c"
  done
  [ -b /dev/vda ] && dd if=/dev/urandom of=/dev/vda bs=4k count=1 seek=$((i % 1000)) conv=fsync 2>/dev/null
  echo "GUEST-ALIVE $i uptime=$(cut -d" " -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo)" >/dev/console
  sleep 2
done
'
# busybox init is not running, so plain `poweroff` would signal a pid 1 that ignores it.
POWER_BUTTON='#!/bin/sh
echo GUEST-POWEROFF >/dev/console
sync
poweroff -f
'

# Only what is missing, like install.sh: `make test` calls us every time.
install_missing() {
  local pkg missing=()
  for pkg in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "$PROG: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The kernel package linux-image-amd64 currently points at (linux-image-6.1.0-NN-amd64).
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# fetch_kernel WORK: download the kernel .deb into WORK and put vmlinuz and mods/ there.
fetch_kernel() {
  local work=$1 pkg
  pkg=$(kernel_package)
  if [ -z "$pkg" ] || ! (cd "$work" && apt-get download "$pkg" >"$work/apt.log" 2>&1); then
    # Stale package lists name a kernel the mirror no longer has: refresh once and retry.
    apt-get update -qq
    pkg=$(kernel_package)
    [ -n "$pkg" ] || die "apt knows no linux-image-amd64 (amd64 Debian only)"
    (cd "$work" && apt-get download "$pkg" >"$work/apt.log" 2>&1) ||
      die "apt-get download $pkg failed: $(tail -n 3 "$work/apt.log")"
  fi
  # dpkg-deb -x rather than installing: no postinst, no initramfs-tools, nothing in /boot.
  # The tree is ~400 MB; we keep 8 MB of it.
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
  cp "$work"/root/boot/vmlinuz-* "$work/vmlinuz"
  mkdir "$work/mods"
  local m f moddir
  moddir=$(echo "$work"/root/lib/modules/*)
  for m in "${MODS[@]}"; do
    f=$(find "$moddir" -name "$m.ko*" | head -n 1)
    case $f in
    *.ko) cp "$f" "$work/mods/$m.ko" ;;
    # busybox insmod reads plain .ko only; newer Debian kernels compress their modules.
    *.ko.xz) xz -dc "$f" >"$work/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$work/mods/$m.ko" ;;
    "")
      # Built into this kernel: nothing to load.
      grep -q "/$m.ko\$" "$moddir/modules.builtin" || die "module $m not found in $pkg"
      ;;
    *) die "cannot unpack $f" ;;
    esac
  done
  echo "$pkg" >"$work/kernel-package"
  rm -rf -- "$work/root" "$work"/*.deb
}

# make_initrd MODDIR OUT: the initramfs with busybox, the modules that exist in MODDIR and INIT.
make_initrd() {
  local mods=$1 out=$2 r m
  r=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
  mkdir -p "$r"/{bin,proc,sys,dev,tmp,run,lib/modules,etc/acpi/PWRF}
  cp /bin/busybox "$r/bin/busybox"
  for m in "${MODS[@]}"; do
    if [ -f "$mods/$m.ko" ]; then
      cp "$mods/$m.ko" "$r/lib/modules/"
      echo "$m" >>"$r/etc/modules-order"
    fi
  done
  printf '%s' "$INIT" >"$r/init"
  printf '%s' "$POWER_BUTTON" >"$r/etc/acpi/PWRF/00000080"
  chmod 0755 "$r/init" "$r/etc/acpi/PWRF/00000080"
  (cd "$r" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) >"$out"
  rm -rf -- "$r"
}

# What initrd.gz is built from; a different value means this script changed since.
recipe_hash() {
  printf '%s\n' "$INIT" "$POWER_BUTTON" "${MODS[*]}" "$(cat "$CACHE/kernel-package" 2>/dev/null)" |
    sha1sum | cut -c1-16
}

build() {
  [ "$(id -u)" -eq 0 ] || die "run as root (apt, and the cache is shared)"
  [ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 is supported"
  mkdir -p -- "$CACHE"
  chmod 0755 -- "$CACHE"
  # Two clones (or two test sessions) building at once would download twice and race on mv.
  exec 9>"$CACHE/.lock"
  flock 9

  if [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd.gz" ] &&
    [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$(recipe_hash)" ]; then
    return 0
  fi

  install_missing
  local work
  work=$(mktemp -d "$CACHE/.build.XXXXXX")
  # shellcheck disable=SC2064  # expand now: work is local
  trap "rm -rf -- '$work'" EXIT
  if [ ! -f "$CACHE/vmlinuz" ] || [ ! -d "$CACHE/mods" ] || [ ! -f "$CACHE/kernel-package" ]; then
    echo "$PROG: downloading the Debian kernel into $CACHE"
    fetch_kernel "$work"
    rm -rf -- "$CACHE/mods"
    mv -- "$work/mods" "$CACHE/mods"
    mv -- "$work/kernel-package" "$CACHE/kernel-package"
    mv -f -- "$work/vmlinuz" "$CACHE/vmlinuz"
  fi
  make_initrd "$CACHE/mods" "$work/initrd.gz"
  # rename() is atomic: a guest starting right now reads the old or the new file, never half.
  mv -f -- "$work/initrd.gz" "$CACHE/initrd.gz"
  recipe_hash >"$CACHE/stamp"
  echo "$PROG: guest ready in $CACHE ($(cat "$CACHE/kernel-package"))"
}

case ${1:-build} in
build) build ;;
path) echo "$CACHE" ;;
*) die "usage: $PROG [build|path]" ;;
esac
