#!/usr/bin/env bash
# Runs every Go fuzz target for a bounded time each (default 10s).
set -euo pipefail
dur="${1:-10s}"
cd "$(dirname "$0")/.."
for pkg in $(go list ./... ); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}'); do
    echo "fuzz: $pkg $f ($dur)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$dur" "$pkg" >/tmp/kiln-fuzz.log 2>&1 || { cat /tmp/kiln-fuzz.log; exit 1; }
  done
done
