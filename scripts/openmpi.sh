#!/usr/bin/env bash
# scripts/openmpi.sh - make Open MPI's mpirun (Debian 12's openmpi-bin, 4.1) usable for godist's
# mpi tests on this machine, and check it: two ranks run, each with its rank in the environment.
#
# Idempotent: installs openmpi-bin when missing; starts no daemon (mpirun's helpers end with
# it), so there is no teardown. Writes an environment file for clients:
#   scripts/openmpi.sh && . /run/godist/openmpi/env
# which lets root run mpirun and pins Open MPI's own traffic to loopback (without that, mpirun
# advertises the machine's external address).
#
# Optional environment:
#   GODIST_OPENMPI_DIR   where the env file goes (default /run/godist/openmpi)
#   GODIST_OPENMPI_IF    interfaces or subnets for Open MPI's traffic (default lo)
set -euo pipefail
umask 022

DIR=${GODIST_OPENMPI_DIR:-/run/godist/openmpi}
IF=${GODIST_OPENMPI_IF:-lo}

say() { printf 'openmpi.sh: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages)"
start=$(date +%s.%N)

. "$(dirname "$0")/apt.sh"
apt_install openmpi-bin || fail "apt-get install openmpi-bin"
command -v mpirun >/dev/null || fail "mpirun not found after installing openmpi-bin"

mkdir -p "$DIR"
cat >"$DIR/env.new" <<EOF
# Open MPI for godist's tests; written by scripts/openmpi.sh.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_oob_tcp_if_include=$IF OMPI_MCA_btl_tcp_if_include=$IF
EOF
mv "$DIR/env.new" "$DIR/env"
# shellcheck disable=SC1091
. "$DIR/env"

# Check: two ranks, more than this machine may have cores, each told its rank and the size.
out=$(timeout 60 mpirun --oversubscribe -np 3 sh -c 'echo "$OMPI_COMM_WORLD_RANK/$OMPI_COMM_WORLD_SIZE"') ||
    fail "mpirun -np 3 failed: $out"
got=$(printf '%s\n' "$out" | sort | tr '\n' ' ')
[ "$got" = "0/3 1/3 2/3 " ] || fail "mpirun -np 3 printed: $got"
say "ok: mpirun $(mpirun --version 2>/dev/null | head -n1 | awk '{print $NF}') runs 3 ranks; checked in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s. Clients: . $DIR/env"
