#!/usr/bin/env bash
# Runs every test of godist: set-up of the real components (scripts/setup.sh: test hosts with
# sshd in network namespaces, a one-node Slurm, Open MPI, tmux; idempotent, root only),
# formatting and vet checks, the unit and multi-process tests, a race-detector pass over the
# concurrent core, and short runs of each fuzz target over its kept corpus. A fresh machine
# needs nothing but Go and apt.
set -euo pipefail
# A process limit guards the machine against a test that re-executes itself without end.
ulimit -u 4096 2>/dev/null || true
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Race-enabled workers otherwise sleep a second at exit, and tests stop many workers.
export GORACE="${GORACE:-atexit_sleep_ms=0}"

echo "== set-up of real components"
scripts/setup.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
go test -count=1 -timeout 15m ./... 2>&1 | tee "$log"
passed=$(grep -c '^ok ' "$log" || true)

echo "== go test -race (core)"
# -short: timing reports (rawbench) mean nothing under the race detector.
go test -count=1 -race -short -timeout 10m ./internal/... ./shm ./script .

echo "== fuzz targets (5s each beyond the kept corpus)"
for pkg in . ./internal/wire ./internal/codec ./script; do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    go test -run '^$' -fuzz "^${target}\$" -fuzztime 5s "$pkg" >/dev/null
    echo "fuzz $pkg $target: ok"
  done
done
# The closing line CI reads: packages whose tests passed (any failure stopped the script).
echo "packages: ${passed} passed, 0 failed"
