#!/usr/bin/env bash
# Runs every Go fuzz target for a bounded number of executions each
# (default 30000x, about 1-10 s per target on 2 cores).
#
# The budget is a count, not a duration: with a duration, go1.26's fuzz
# coordinator can report "context deadline exceeded" as a failure when the
# deadline fires while a worker is mid-execution (golang/go#75804, fixed in
# go1.27). A count has no deadline to race, so a failure here is a finding.
set -euo pipefail
budget="${1:-30000x}"
case "$budget" in
  *[0-9]x) ;;
  *) echo "fuzz.sh: budget must be an execution count such as 30000x, got $budget" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}'); do
    echo "fuzz: $pkg $f ($budget)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$budget" -timeout 10m "$pkg" >"$log" 2>&1 || { cat "$log"; exit 1; }
  done
done
