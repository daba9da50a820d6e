#!/usr/bin/env bash
# Set up a development environment on a fresh machine: redis-server (via apt-get
# when missing and running as root), a virtualenv in $VENV, and the package with
# its development extras. Safe to run again; does nothing that is already done.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
APT_PACKAGES=${APT_PACKAGES:-redis-server}

missing=()
for pkg in $APT_PACKAGES; do
  case "$pkg" in
    redis-server) command -v redis-server >/dev/null || missing+=("$pkg") ;;
    prometheus) command -v promtool >/dev/null || missing+=("$pkg") ;;
    systemd) command -v systemd-analyze >/dev/null || missing+=("$pkg") ;;
    *) dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the Debian packages start system services we do not use
    if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
  else
    echo "missing: ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
