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
# apt_get ARGS...: waits for the dpkg lock and tries again once, since a fresh machine's
# first install can fail on package lists that were cleaned away.
apt_get() {
  local i
  for i in 1 2 3; do
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 "$@" >/dev/null && return 0
    say "apt-get $1 failed (try $i); updating package lists"
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null || true
    sleep 2
  done
  return 1
}

# Each component's script installs its own packages (and keeps services from starting);
# tmux, for the REPL tests, is installed here.
if ! command -v tmux >/dev/null; then
  say "installing tmux"
  apt_get update || true
  apt_get install --no-install-recommends tmux
fi

t0=$(date +%s)
scripts/hosts.sh
scripts/slurm.sh
scripts/slurm.sh hosts
scripts/openmpi.sh
say "components up in $(( $(date +%s) - t0 ))s"
