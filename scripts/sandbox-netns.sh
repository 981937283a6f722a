#!/usr/bin/env bash
# Run a command inside a network namespace made for it: only loopback, no route off
# the host. The test suite and the benchmarks that send traffic run this way, so a
# test that forgets to enter its own topology finds "Network is unreachable" instead
# of sending a packet anywhere. The namespace (and anything still running in it) is
# removed when the command ends, also on Ctrl-C and SIGTERM; namespaces of earlier
# runs that were killed outright are removed at the next start.
#   scripts/sandbox-netns.sh COMMAND [ARG ...]
# Sets SOCKSCOPE_SANDBOX_NETNS to the namespace's name for the command.
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: scripts/sandbox-netns.sh COMMAND [ARG ...]" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "sandbox-netns: creating a network namespace needs root" >&2
    exit 1
fi
prefix=sockscope-sandbox-
for path in /run/netns/"$prefix"*; do
    [ -e "$path" ] || continue
    owner=${path##*/"$prefix"}
    if ! kill -0 "$owner" 2>/dev/null; then
        for pid in $(ip netns pids "${path##*/}" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns delete "${path##*/}" 2>/dev/null || true
    fi
done

name="$prefix$$"
remove() {
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$name" 2>/dev/null || true
}
trap remove EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ip netns add "$name"
ip -n "$name" link set lo up
status=0
SOCKSCOPE_SANDBOX_NETNS=$name ip netns exec "$name" "$@" || status=$?
exit "$status"
