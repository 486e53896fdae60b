#!/usr/bin/env bash
# A real local farm, end to end: a metaserver (bbolt store + blob directory),
# two buildservers of two operators (bubblewrap sandbox), webstatus, and
# startcompile building the sample project in examples/hello from a real git
# repository: first the unverified result of one volunteer (--accept
# unverified), then the artifact verified by two operators (the default).
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
# startcompile pins the log key of each metaserver address it talks to (in
# $XDG_CONFIG_HOME/kiln/logs): every demo is a new farm with a new key on the
# same address, so the demo's requester keeps its own configuration.
export XDG_CONFIG_HOME="$demo/requester-config"
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
"$bin/metaserver" operator add --data-dir "$demo/meta" alice
"$bin/metaserver" operator add --data-dir "$demo/meta" bob
token1=$("$bin/metaserver" buildserver add --data-dir "$demo/meta" --operator alice volunteer-1)
token2=$("$bin/metaserver" buildserver add --data-dir "$demo/meta" --operator bob volunteer-2)
echo "build server credentials created for volunteer-1 (alice) and volunteer-2 (bob), stored only as hashes"

echo "== buildserver volunteer-1 of alice (sandbox: bubblewrap)"
"$bin/buildserver" --metaserver "$addr" --token "$token1" --data-dir "$demo/buildserver-1" --jobs 2 \
  >"$demo/buildserver-1.log" 2>&1 &
pids+=($!)

echo "== webstatus on http://127.0.0.1:$wport"
"$bin/webstatus" --metaserver "$addr" --listen "127.0.0.1:$wport" >"$demo/webstatus.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$wport" webstatus

echo "== startcompile --accept unverified: the first result, on one volunteer's word"
"$bin/startcompile" --metaserver "$addr" --project hello -o level=3 --accept unverified --download "$demo/out-unverified" demo@example.com
"$demo/out-unverified/hello"

echo "== a default request waits for a second operator, and says so"
build=$("$bin/startcompile" --metaserver "$addr" --project hello -o level=3 --json demo@example.com |
  sed -n 's/.*"build_id":\([0-9]*\).*/\1/p')
"$bin/startcompile" --metaserver "$addr" status "$build" | grep -E "waiting|trust|result" || true

echo "== buildserver volunteer-2 of bob joins: the replica runs there"
"$bin/buildserver" --metaserver "$addr" --token "$token2" --data-dir "$demo/buildserver-2" --jobs 2 \
  --build-uid 1800000000 >"$demo/buildserver-2.log" 2>&1 &
pids+=($!)

echo "== startcompile (default --accept verified): the artifact two operators agree on"
"$bin/startcompile" --metaserver "$addr" status --download "$demo/out" "$build"
echo "== the artifact"
find "$demo/out" -type f | sed "s|$demo/|  |"
"$demo/out/hello"

echo "== the same request again is answered from the cache, verified"
"$bin/startcompile" --metaserver "$addr" --project hello -o level=3 --json demo@example.com

echo
echo "demo: done. Logs in $demo/*.log; metrics at http://127.0.0.1:$pport/metrics"
if [ "${KEEP:-0}" = "1" ]; then
  echo "demo: farm running; browse http://127.0.0.1:$wport/ — Ctrl-C stops it"
  wait
fi
