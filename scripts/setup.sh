#!/usr/bin/env bash
# Brings up the real components godist's tests use, idempotently, on a fresh Debian 12 machine
# run as root: test hosts h1..h3 (network namespaces with their own hostnames and sshd), a
# one-node Slurm and a 3-node Slurm on those hosts, Open MPI's mpirun, and tmux for the REPL
# tests. Each step is its own script and re-checks what is already up in a few seconds.
# Without root it does nothing and says so:
# the tests that need these components then skip (or fail, when CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: not root: sshd hosts, Slurm, Open MPI and tmux are not set up (their tests skip)"
  exit 0
fi

say() { printf 'setup: %s\n' "$*"; }
. scripts/apt.sh

# Each component's script installs its own packages; tmux, for the REPL tests, is
# installed here.
apt_install tmux

t0=$(date +%s)
scripts/hosts.sh
scripts/slurm.sh
scripts/slurm.sh hosts
scripts/openmpi.sh
say "components up in $(( $(date +%s) - t0 ))s"
