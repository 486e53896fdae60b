#!/usr/bin/env bash
# A real local farm, end to end: a metaserver (bbolt store + blob directory),
# one buildserver (bubblewrap sandbox), webstatus, and startcompile building the
# sample project in examples/hello from a real git repository.
#   KEEP=1 make demo   keeps the farm running until Ctrl-C
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/bin"
demo="$root/.demo"
mport="${KILN_DEMO_PORT:-7070}"
wport="${KILN_DEMO_WEB_PORT:-8080}"
pport="${KILN_DEMO_METRICS_PORT:-9090}"
addr="127.0.0.1:$mport"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: $3 did not come up; see $demo/*.log" >&2
  exit 1
}

rm -rf "$demo"
mkdir -p "$demo"
echo "== sample project: a git repository with hello.c, a Makefile and kiln.yaml"
git init -q -b main "$demo/hello"
cp "$root"/examples/hello/* "$demo/hello/"
git -C "$demo/hello" add -A
git -C "$demo/hello" -c user.name=demo -c user.email=demo@example.com commit -qm "sample project"

echo "== metaserver on $addr (data in $demo/meta)"
"$bin/metaserver" serve --data-dir "$demo/meta" --listen "$addr" --metrics-listen "127.0.0.1:$pport" \
  --public-url "http://127.0.0.1:$wport" >"$demo/metaserver.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$mport" metaserver

"$bin/metaserver" project add --data-dir "$demo/meta" hello "$demo/hello"
token=$("$bin/metaserver" buildserver add --data-dir "$demo/meta" volunteer-1)
echo "build server credential created for volunteer-1 (stored only as a hash)"

echo "== buildserver (sandbox: bubblewrap)"
"$bin/buildserver" --metaserver "$addr" --token "$token" --data-dir "$demo/buildserver" --jobs 2 \
  >"$demo/buildserver.log" 2>&1 &
pids+=($!)

echo "== webstatus on http://127.0.0.1:$wport"
"$bin/webstatus" --metaserver "$addr" --listen "127.0.0.1:$wport" >"$demo/webstatus.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$wport" webstatus

echo "== startcompile: build hello for this machine and download it"
"$bin/startcompile" --metaserver "$addr" --project hello -o level=3 --download "$demo/out" demo@example.com
echo "== the artifact"
find "$demo/out" -type f | sed "s|$demo/|  |"
"$demo/out/hello"

echo "== the same request again is answered from the cache"
"$bin/startcompile" --metaserver "$addr" --project hello -o level=3 --json demo@example.com

echo
echo "demo: done. Logs in $demo/*.log; metrics at http://127.0.0.1:$pport/metrics"
if [ "${KEEP:-0}" = "1" ]; then
  echo "demo: farm running; browse http://127.0.0.1:$wport/ — Ctrl-C stops it"
  wait
fi
