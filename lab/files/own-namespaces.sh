#!/bin/bash
# Run a command in network and mount namespaces of its own, as a second lab
# beside the first: its own loopback (the guests' SSH forwards, 127.0.0.1:2222
# and on, do not meet the other lab's), its own bridge and taps, and its own
# /run/netns (the ks-* namespaces of the two labs do not meet either). Nothing
# it makes is seen from the root namespace, and it all goes when the command
# ends. Run as root by run-tests: own-namespaces.sh COMMAND [ARG...].
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: own-namespaces.sh COMMAND [ARG...]" >&2; exit 2; }
if [ "${KEEPSOURCE_OWN_NAMESPACES:-}" != inside ]; then
  mkdir -p /run/netns
  export KEEPSOURCE_OWN_NAMESPACES=inside
  exec unshare --mount --net --propagation private -- "$0" "$@"
fi
mount -t tmpfs -o mode=0755 keepsource-netns /run/netns
ip link set lo up
exec "$@"
