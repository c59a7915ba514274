#!/usr/bin/env bash
# scripts/slurm.sh [hosts] - bring up a real Slurm cluster on this machine for godist's slurm
# tests: a private munged, slurmctld and slurmd (Debian 12's slurm-wlm, 22.05), all as root and
# all configured from one private directory. Nothing under /etc is written.
#
# Without argument: one node, this machine, at 127.0.0.1 (state in /run/godist/slurm).
# With "hosts": one node per test host of scripts/hosts.sh (h1..h3: network namespaces with
# their own hostnames, which must be up), each running its own slurmd in that host's
# namespaces, slurmctld on the bridge address (state in /run/godist/slurm-hosts). Both may run
# at the same time.
#
# Idempotent: installs slurm-wlm and munge when missing, writes the configuration, starts only
# what is not running, waits for the node to be idle and then checks that srun, sbatch and
# scancel work. While everything is up, running it again only re-checks (a few seconds).
# `scripts/slurm-teardown.sh [hosts]` stops it.
#
# Clients need the environment file (no /etc/slurm/slurm.conf exists):
#   scripts/slurm.sh && . /run/godist/slurm/env     # exports SLURM_CONF
#   scripts/slurm.sh hosts && . /run/godist/slurm-hosts/env
#
# Optional environment:
#   GODIST_SLURM_DIR    state: config, spool, logs, PID files, munge key and socket
#                       (default /run/godist/slurm or /run/godist/slurm-hosts; munged
#                       refuses parents writable by group or others)
#   GODIST_SLURM_PORTS  "CTLD SLURMD" ports (default "6847 6848", hosts: "6857 6858"; not
#                       Slurm's 6817/6818, so that another test Slurm here does not collide)
#   GODIST_HOSTS_DIR    where scripts/hosts.sh keeps its state (default /run/godist/hosts)
#   GODIST_SLURM_PROCTRACK  cgroup | linuxproc | auto (default auto: cgroup when the cgroup v1
#                       freezer is mounted; linuxproc lets double-forked job processes
#                       outlive scancel)
set -euo pipefail
umask 022

MODE=${1:-single}
case $MODE in
single)
    DIR=${GODIST_SLURM_DIR:-/run/godist/slurm}
    read -r CTLD_PORT D_PORT <<<"${GODIST_SLURM_PORTS:-6847 6848}"
    ;;
hosts)
    DIR=${GODIST_SLURM_DIR:-/run/godist/slurm-hosts}
    read -r CTLD_PORT D_PORT <<<"${GODIST_SLURM_PORTS:-6857 6858}"
    HOSTS_DIR=${GODIST_HOSTS_DIR:-/run/godist/hosts}
    ;;
*)
    echo "usage: $0 [hosts]" >&2
    exit 2
    ;;
esac
PROCTRACK=${GODIST_SLURM_PROCTRACK:-auto}
CONF=$DIR/slurm.conf
SOCK=$DIR/munge/munge.socket

say() { printf 'slurm.sh %s: %s\n' "$MODE" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (it starts the Slurm daemons)"
start=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

. "$(dirname "$0")/apt.sh"
apt_install slurm-wlm munge procps iproute2 util-linux || fail "apt-get install of Slurm's packages"

# The nodes: this machine, or the test hosts with their addresses and sshd (whose namespaces
# each slurmd enters).
if [ "$MODE" = hosts ]; then
    [ -s "$HOSTS_DIR/env" ] || fail "the test hosts are not up ($HOSTS_DIR/env missing): run scripts/hosts.sh first"
    # shellcheck disable=SC1091
    . "$HOSTS_DIR/env"
    read -r -a NODES <<<"$GODIST_HOSTS"
    read -r -a ADDRS <<<"$GODIST_HOST_ADDRS"
    [ ${#NODES[@]} -gt 0 ] && [ ${#NODES[@]} = ${#ADDRS[@]} ] || fail "bad host list in $HOSTS_DIR/env"
    # The bridge address, by which the hosts reach the root namespace.
    CTLD_ADDR=$(awk -v b="$GODIST_BRIDGE" '$2 == b {print $1}' "$HOSTS_DIR/hosts")
    [ -n "$CTLD_ADDR" ] || fail "no address of bridge $GODIST_BRIDGE in $HOSTS_DIR/hosts"
    for h in "${NODES[@]}"; do
        { [ -s "$HOSTS_DIR/$h/sshd.pid" ] && [ -d "/proc/$(cat "$HOSTS_DIR/$h/sshd.pid")" ]; } ||
            fail "host $h is down (no sshd): run scripts/hosts.sh"
    done
else
    NODES=("$(hostname -s)")
    ADDRS=(127.0.0.1)
    CTLD_ADDR=127.0.0.1
fi

# running PIDFILE WORD -> true if the PID file names a live process whose command line has WORD
running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

export SLURM_CONF=$CONF
write_env() {
    printf 'export SLURM_CONF=%s\n' "$CONF" >"$DIR/env.new"
    mv "$DIR/env.new" "$DIR/env"
}

# check: an srun of two tasks (one per node, with several nodes, which must name themselves),
# a batch job that writes its output, and a running job cancelled.
check() {
    local out a b state
    if [ ${#NODES[@]} -gt 1 ]; then
        out=$(timeout 60 srun -N${#NODES[@]} -n${#NODES[@]} hostname | sort | tr '\n' ' ') || fail "srun hostname"
        [ "$out" = "$(printf '%s\n' "${NODES[@]}" | sort | tr '\n' ' ')" ] || fail "srun on every node printed: $out"
    else
        out=$(timeout 60 srun -N1 -n2 hostname) || fail "srun -n2 hostname"
        [ "$(printf '%s\n' "$out" | wc -l)" = 2 ] || fail "srun -n2 printed: $out"
    fi
    a=$(sbatch --parsable -o "$DIR/check-%j.out" --wrap 'echo "ran $SLURM_JOB_ID"') || fail "sbatch"
    b=$(sbatch --parsable -o /dev/null --wrap 'sleep 600') || fail "sbatch"
    for _ in $(seq 150); do
        state=$(squeue -h -j "$b" -o %T 2>/dev/null || true)
        [ "$state" = RUNNING ] && break
        sleep 0.1
    done
    [ "$state" = RUNNING ] || fail "job $b is '$state', not RUNNING, after 15 s"
    scancel "$b"
    for _ in $(seq 150); do
        state=$(squeue -h -j "$a,$b" -o %i 2>/dev/null || true)
        [ -z "$state" ] && break
        sleep 0.1
    done
    [ -z "$state" ] || fail "jobs still in the queue after 15 s: $state"
    scontrol show job "$b" | grep -q 'JobState=CANCELLED' || fail "job $b was not cancelled"
    grep -qx "ran $a" "$DIR/check-$a.out" || fail "batch job $a wrote no output"
    rm -f "$DIR/check-$a.out"
    say "ok: srun, sbatch and scancel work (jobs $a $b)"
}

# A host brought down and up again (scripts/hosts-teardown.sh, hosts.sh) is a new network
# namespace: a slurmd still in the old one is stale, and is stopped so that it starts anew.
if [ "$MODE" = hosts ]; then
    for h in "${NODES[@]}"; do
        running "$DIR/slurmd-$h.pid" "$CONF" || continue
        pid=$(cat "$DIR/slurmd-$h.pid")
        if [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink "/proc/$(cat "$HOSTS_DIR/$h/sshd.pid")/ns/net")" ]; then
            say "slurmd of $h runs in an old namespace of that host; restarting it"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do running "$DIR/slurmd-$h.pid" "$CONF" || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$DIR/slurmd-$h.pid"
        fi
    done
fi
all_slurmd() {
    local h
    for h in "${NODES[@]}"; do running "$DIR/slurmd-$h.pid" "$CONF" || return 1; done
}
if running "$DIR/munged.pid" "$SOCK" && running "$DIR/slurmctld.pid" "$CONF" && all_slurmd; then
    check
    write_env
    say "already up; checked in $(since "$start")s. Clients: . $DIR/env"
    exit 0
fi

# Directories: munged wants its socket directory searchable by everyone and no group- or
# world-writable directory above it; the key stays private.
mkdir -p "$DIR"/{munge,key,ctld,spool,log}
chmod 755 "$DIR" "$DIR/munge"
chmod 700 "$DIR/key" "$DIR/ctld"

# munge: a private daemon with its own key and socket; Slurm is pointed at it by AuthInfo.
if [ ! -s "$DIR/key/munge.key" ]; then
    head -c 1024 /dev/urandom >"$DIR/key/munge.key"
    chmod 400 "$DIR/key/munge.key"
fi
if ! running "$DIR/munged.pid" "$SOCK"; then
    rm -f "$SOCK" "$SOCK.lock"
    /usr/sbin/munged --socket="$SOCK" --key-file="$DIR/key/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/key/munged.seed" || fail "munged did not start; see $DIR/log/munged.log"
fi
munge -S "$SOCK" -n | unmunge -S "$SOCK" >/dev/null || fail "munge credential round trip"

for port in "$CTLD_PORT" "$D_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q . && ! running "$DIR/slurmctld.pid" "$CONF" &&
        ! running "$DIR/slurmd-${NODES[0]}.pid" "$CONF"; then
        fail "port $port is in use by another process: $(ss -Hltnp "sport = :$port")"
    fi
done

# The machine's topology exactly as slurmd sees it, so that a node registers without
# complaint (the test hosts share this machine's CPUs).
hw=$(slurmd -C | head -n1)
field() { tr ' ' '\n' <<<"$hw" | sed -n "s/^$1=//p"; }
topology="CPUs=$(field CPUs) Sockets=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore) RealMemory=$(field RealMemory)"

if [ "$PROCTRACK" = auto ]; then
    if [ -d /sys/fs/cgroup/freezer ] && [ -d /sys/fs/cgroup/cpuset ]; then PROCTRACK=cgroup; else PROCTRACK=linuxproc; fi
fi
case $PROCTRACK in
cgroup)
    proctrack="ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity"
    printf 'CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=no\nConstrainDevices=no\n' >"$DIR/cgroup.conf"
    ;;
linuxproc)
    proctrack="ProctrackType=proctrack/linuxproc
TaskPlugin=task/none"
    rm -f "$DIR/cgroup.conf"
    ;;
*) fail "GODIST_SLURM_PROCTRACK must be cgroup, linuxproc or auto" ;;
esac

cat >"$CONF.new" <<EOF
# One-node Slurm for godist's tests; written by scripts/slurm.sh.
ClusterName=godist
SlurmctldHost=$(hostname -s)($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
MailProg=/bin/true
$proctrack
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
EOF
for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeAddr=${ADDRS[$i]} $topology State=UNKNOWN" >>"$CONF.new"
done
echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$CONF.new"
mv "$CONF.new" "$CONF"

if ! running "$DIR/slurmctld.pid" "$CONF"; then
    rm -f "$DIR/slurmctld.pid"
    slurmctld -f "$CONF" || fail "slurmctld did not start; see $DIR/log/slurmctld.log"
fi
for h in "${NODES[@]}"; do
    running "$DIR/slurmd-$h.pid" "$CONF" && continue
    rm -f "$DIR/slurmd-$h.pid"
    mkdir -p "$DIR/spool/$h"
    if [ "$MODE" = hosts ]; then
        # In the host's namespaces, those of its sshd: network, hostname and /etc/hosts.
        # (`ip netns exec` would remount /sys and hide the cgroups Slurm tracks jobs with.)
        nsenter --target "$(cat "$HOSTS_DIR/$h/sshd.pid")" --net --uts --mount -- \
            slurmd -N "$h" -f "$CONF" || fail "slurmd on $h did not start; see $DIR/log/slurmd-$h.log"
    else
        slurmd -N "$h" -f "$CONF" || fail "slurmd did not start; see $DIR/log/slurmd-$h.log"
    fi
done
state=""
for _ in $(seq 300); do
    state=$(sinfo -h -o %T 2>/dev/null | sort -u | tr '\n' ' ')
    case $state in "idle " | "mixed " | "allocated ") break ;; esac
    sleep 0.1
done
case $state in "idle " | "mixed " | "allocated ") ;; *) fail "nodes are '$state' after 30 s; see $DIR/log/" ;; esac

check
write_env
say "up in $(since "$start")s: nodes ${NODES[*]} ($topology each, $PROCTRACK). Clients: . $DIR/env"
