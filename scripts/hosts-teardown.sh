#!/usr/bin/env bash
# hosts-teardown.sh - undo scripts/hosts.sh: stop each host's sshd (found by its PID file)
# with its sessions, then anything else still running inside those network namespaces (only
# what was started there), and remove the namespaces, veths, bridge, /etc/netns/<ns>/ and the
# state directory (KEEP_STATE=1 keeps keys and configs). Idempotent; safe when nothing is up.
set -euo pipefail
DIR=${GODIST_HOSTS_DIR:-/run/godist/hosts}
# What hosts.sh recorded beats the environment: it is what was actually created.
# shellcheck disable=SC1091
[ -s "$DIR/layout" ] && . "$DIR/layout"
HOSTS=${GODIST_HOSTS:-h1 h2 h3}
PREFIX=${GODIST_NS_PREFIX:-gd-}
BR=${GODIST_BRIDGE:-gdbr0}

say() { printf '[hosts-teardown] %s\n' "$*" >&2; }

. "$(dirname "$0")/proc.sh"

stopped=0
for h in $HOSTS; do
    ns=$PREFIX$h
    d=$DIR/$h
    if [ -s "$d/sshd.pid" ]; then
        pid=$(cat "$d/sshd.pid")
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$d/sshd_config"; then
            # shellcheck disable=SC2046
            stop "$pid" $(descendants "$pid")
            stopped=1
        fi
    fi
    if [ -e "/run/netns/$ns" ]; then
        # shellcheck disable=SC2046
        set -- $(ip netns pids "$ns" 2>/dev/null || true)
        if [ $# -gt 0 ]; then
            say "$h: stopping what still runs in $ns: $*"
            stop "$@"
            stopped=1
        fi
    fi
done
# The FIN/RST of what was killed must reach clients in the root namespace before the links
# vanish, or those clients hang until their own timeouts.
[ $stopped = 1 ] && sleep 0.5
for h in $HOSTS; do
    ns=$PREFIX$h
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
    ip link del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
done
rmdir /etc/netns 2>/dev/null || true
ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR"
if [ "${KEEP_STATE:-0}" != 1 ]; then
    rm -rf "$DIR"
    rmdir "$(dirname "$DIR")" 2>/dev/null || true
fi
say "done"
