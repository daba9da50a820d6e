# shellcheck shell=bash
# Sourced by the container scripts. podman reads /etc/containers/containers.conf; a host
# without one (a CI container, a fresh VM) gets scripts/containers.conf instead, whose
# settings work where root may not raise rlimits and crun refuses the cgroup layout.
# An explicit CONTAINERS_CONF wins.
if [ -z "${CONTAINERS_CONF:-}" ] && [ ! -e /etc/containers/containers.conf ]; then
  CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/containers.conf"
  export CONTAINERS_CONF
fi
