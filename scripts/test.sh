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
fuzzlog=$(mktemp)
for pkg in . ./internal/wire ./internal/codec ./internal/sched ./script; do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    # A failing input the fuzzer found fails at once. A run that failed without one (the
    # fuzzing engine losing a worker process on a loaded machine) is tried once more.
    # Minimizing a newly interesting input may take a worker up to a minute by default,
    # during which it reports nothing: with 5 s to run, the engine then gives up with
    # "context deadline exceeded". Seen on FuzzParseRingOffer; 1000 tries bound it.
    ok=0
    for attempt in 1 2; do
      if go test -run '^$' -fuzz "^${target}\$" -fuzztime 5s -fuzzminimizetime 1000x "$pkg" >"$fuzzlog" 2>&1; then
        ok=1; break
      fi
      if grep -q "Failing input written to" "$fuzzlog"; then break; fi
      echo "fuzz $pkg $target: attempt $attempt failed without a failing input:"
      tail -n 5 "$fuzzlog"
    done
    if [ "$ok" != 1 ]; then
      cat "$fuzzlog"; rm -f "$fuzzlog"; exit 1
    fi
    echo "fuzz $pkg $target: ok"
  done
done
rm -f "$fuzzlog"
# The closing line CI reads: packages whose tests passed (any failure stopped the script).
echo "packages: ${passed} passed, 0 failed"
