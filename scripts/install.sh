#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for vmpanel: system packages, then .venv.
#
#   scripts/install.sh [--postgresql] [--tests]     (or VMPANEL_INSTALL_POSTGRESQL=1)
#
# Idempotent and quick when everything is in place, because `make demo` and `make test` run it
# every time: apt is only called for packages that are missing, pip only when requirements.txt
# changed since the last successful install.
set -euo pipefail
ROOT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT_DIR"

PACKAGES=(
  libvirt-daemon libvirt-clients # libvirtd hosting the test driver; virsh for poking at it
  libvirt-dev pkg-config gcc python3-dev # libvirt-python builds against the system libvirt
  python3-venv
  redis-server # Celery broker; we run our own instance, the package just provides the binary
  chromium     # the browser tests drive Debian's Chromium, no downloaded browsers
  fonts-wqy-microhei # Chinese glyphs for Chromium in the browser tests (readers have their own)
  gettext      # msgfmt compiles the translations (locale/); makemessages needs xgettext
)
# PostgreSQL only on request: CI proves the panel on it; the demo and dev use SQLite.
# nginx for the tests (`--tests`): tests/test_deploy.py puts deploy/nginx/vmpanel.conf in
# front of the panel with an nginx of its own; the package just provides the binary.
for arg in "$@"; do
  case $arg in
    --postgresql) PACKAGES+=(postgresql) ;;
    --tests) PACKAGES+=(nginx) ;;
    *) echo "install.sh: unknown option $arg (--postgresql, --tests)" >&2; exit 2 ;;
  esac
done
if [ "${VMPANEL_INSTALL_POSTGRESQL:-}" = 1 ]; then
  PACKAGES+=(postgresql)
fi

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update
  # No recommends: libvirt-daemon would otherwise pull in the system daemon, QEMU and more.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "install.sh: creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
# The stamp is touched only after pip succeeded, so a failed install is retried next time.
STAMP=.venv/.installed
if [ ! -e "$STAMP" ] || [ requirements.txt -nt "$STAMP" ]; then
  echo "install.sh: installing requirements.txt into .venv"
  .venv/bin/pip install --disable-pip-version-check -r requirements.txt
  touch "$STAMP"
fi

# The translations: locale/*/LC_MESSAGES/*.po are the source, the .mo files beside them a
# build product (not committed), compiled here when missing or older than their .po (what
# `manage.py compilemessages` does, without its walk through .venv).
for po in locale/*/LC_MESSAGES/*.po; do
  [ -e "$po" ] || continue
  mo="${po%.po}.mo"
  if [ ! -e "$mo" ] || [ "$po" -nt "$mo" ]; then
    echo "install.sh: compiling $po"
    msgfmt --check -o "$mo.tmp" "$po"
    mv "$mo.tmp" "$mo"
  fi
done
