#!/usr/bin/env bash
# Make the local Python base image the tests build the whalecast image on, where no
# container registry is reachable: a minimal Debian bookworm (debootstrap --variant=minbase)
# with Debian's python3 (3.11, at /usr/bin/python3), venv and pip, imported into podman.
# Does nothing when the image is already there. Needs root, debootstrap and podman.
#   BASE_IMAGE   the local name (default localhost/whalecast-python:3.11-bookworm)
#   MIRROR       the Debian mirror (default: the host's first deb.debian.org-style URI
#                in /etc/apt, else http://deb.debian.org/debian)
# Prints the image name on standard output.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
. scripts/podman-env.sh

BASE_IMAGE=${BASE_IMAGE:-localhost/whalecast-python:3.11-bookworm}

host_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if podman image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "base-image: $tool is not installed" >&2; exit 1; }
done
MIRROR=${MIRROR:-$(host_mirror)}
rootfs=$(mktemp -d /var/tmp/whalecast-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image: debootstrap bookworm from $MIRROR" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$MIRROR" >&2
# an image carries no package lists, caches or logs of its making
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/debootstrap
tar -C "$rootfs" --numeric-owner -c . \
  | podman import --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$BASE_IMAGE" >&2
echo "$BASE_IMAGE"
