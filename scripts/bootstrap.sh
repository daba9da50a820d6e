#!/usr/bin/env bash
# Set up a development environment on a fresh machine: the system tools the tests use
# (via apt-get when missing and running as root), a virtualenv in $VENV with exactly the
# versions of the lock file $LOCK (hashes checked), and the package itself on top.
# LOCK=none installs the newest releases pyproject.toml allows instead (`make test-latest`).
# Safe to run again; does nothing that is already done.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
LOCK=${LOCK:-requirements/dev.txt}
# the same tools as CI: the deploy checks need promtool, systemd-analyze and shellcheck
APT_PACKAGES=${APT_PACKAGES:-redis-server prometheus systemd shellcheck chromium fonts-dejavu-core podman buildah runc debootstrap catatonit golang-github-containernetworking-plugin-dnsname}

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
  elif ! command -v redis-server >/dev/null; then
    echo "missing: ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  else
    # not root: the suite runs, and its summary names the checks these tools enable
    echo "not installed (their checks will be skipped): ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q)
if [ "$LOCK" = none ]; then
  "${pip[@]}" --upgrade pip
  "${pip[@]}" --upgrade -e ".[$EXTRAS]"
else
  "${pip[@]}" --require-hashes -r "$LOCK"
  "${pip[@]}" --no-deps -e .
fi
