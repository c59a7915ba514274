#!/usr/bin/env bash
# scripts/slurm-teardown.sh [hosts] - stop what `scripts/slurm.sh [hosts]` started: cancel this cluster's jobs (so
# that Slurm itself ends their processes), stop slurmd, slurmctld (and its slurmscriptd) and
# munged by their PID files, stop any job process left in this node's Slurm cgroups, remove
# those cgroup directories, and delete the state directory (GODIST_KEEP_STATE=1 keeps it).
# Idempotent: with nothing up it does nothing.
set -euo pipefail
MODE=${1:-single}
case $MODE in
single) DIR=${GODIST_SLURM_DIR:-/run/godist/slurm} ;;
hosts) DIR=${GODIST_SLURM_DIR:-/run/godist/slurm-hosts} ;;
*)
    echo "usage: $0 [hosts]" >&2
    exit 2
    ;;
esac
CONF=$DIR/slurm.conf
SOCK=$DIR/munge/munge.socket
# The nodes as the configuration names them (the test hosts may be gone already).
NODES=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF" 2>/dev/null || true)

say() { printf 'slurm-teardown.sh %s: %s\n' "$MODE" "$*" >&2; }

. "$(dirname "$0")/proc.sh"
# ours PIDFILE WORD: the PID, if the file names a live process of this cluster.
ours() {
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"; then
        echo "$pid"
    fi
}

ctld=$(ours "$DIR/slurmctld.pid" "$CONF")
slurmd=""
for f in "$DIR"/slurmd-*.pid; do
    [ -e "$f" ] && slurmd="$slurmd $(ours "$f" "$CONF")"
done
slurmd=${slurmd# }
munged=$(ours "$DIR/munged.pid" "$SOCK")

if [ -n "$ctld" ] && [ -n "$munged" ]; then
    export SLURM_CONF=$CONF
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 150); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

if [ -n "${slurmd// /}" ]; then
    say "stopping slurmd $slurmd"
    # shellcheck disable=SC2086
    stop $slurmd
fi
if [ -n "$ctld" ]; then
    # shellcheck disable=SC2046
    set -- "$ctld" $(descendants "$ctld")
    say "stopping slurmctld $*"
    stop "$@"
fi
[ -z "$munged" ] || { say "stopping munged $munged"; stop "$munged"; }

# A slurmstepd of this cluster that outlived its slurmd runs in our log directory.
for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
    cwd=$(readlink "/proc/$p/cwd" 2>/dev/null || true)
    case $cwd in "$DIR" | "$DIR"/*) say "stopping leftover slurmstepd $p"; stop "$p" ;; esac
done

# With proctrack/cgroup, processes still in slurm_<node> are job processes: thaw and stop them,
# then remove the (then empty) directories slurmd made.
for node in $NODES; do
    freezer=/sys/fs/cgroup/freezer/slurm_$node
    if [ -d "$freezer" ]; then
        find "$freezer" -name freezer.state -exec sh -c 'for f; do echo THAWED >"$f"; done' sh {} + 2>/dev/null || true
        # shellcheck disable=SC2046
        set -- $(find "$freezer" -name cgroup.procs -exec cat {} + 2>/dev/null)
        if [ $# -gt 0 ]; then
            say "stopping job processes left in $freezer: $*"
            stop "$@"
        fi
    fi
    for top in /sys/fs/cgroup/*/"slurm_$node"; do
        [ -d "$top" ] || continue
        find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ ! -d "$top" ] || say "warning: could not remove $top"
    done
done

if [ "${GODIST_KEEP_STATE:-0}" != 1 ]; then
    rm -rf "$DIR"
    rmdir "$(dirname "$DIR")" 2>/dev/null || true
fi
say "done"
