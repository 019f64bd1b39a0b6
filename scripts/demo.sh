#!/usr/bin/env bash
# Runs the whole farm on this machine (on free ports, with its data in a temporary directory),
# submits examples/hello, waits for it, downloads the artifact (checking its SHA-256), prints the
# log, then submits a long build and cancels it, and stops the farm. GATEWAY_PORT,
# STORAGE_PORT and SCHEDULER_PORT choose the ports instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --quiet
bin=./target/debug
data=$(mktemp -d)
slow=$(mktemp -d)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
gateway_port=${GATEWAY_PORT:-$(free_port)}
storage_port=${STORAGE_PORT:-$(free_port)}
scheduler_port=${SCHEDULER_PORT:-$(free_port)}
export FREEAGENT_API_KEY=${FREEAGENT_API_KEY:-fak_demo_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export FREEAGENT_GATEWAY_URL=http://127.0.0.1:$gateway_port
$bin/freeagent dev --data-dir "$data" --workers 2 --gateway-port "$gateway_port" \
  --storage-port "$storage_port" --scheduler-port "$scheduler_port" > "$data/farm.log" 2>&1 &
farm=$!
trap 'kill -INT $farm 2>/dev/null; wait $farm 2>/dev/null || true; rm -rf "$data" "$slow"' EXIT
for _ in $(seq 1 120); do
  curl -fs "$FREEAGENT_GATEWAY_URL/readyz" >/dev/null 2>&1 && break
  kill -0 $farm 2>/dev/null || { cat "$data/farm.log"; exit 1; }
  sleep 0.5
done
curl -fs "$FREEAGENT_GATEWAY_URL/readyz" >/dev/null || { echo "the farm did not get ready:"; cat "$data/farm.log"; exit 1; }
echo "farm is up at $FREEAGENT_GATEWAY_URL (dashboard: $FREEAGENT_GATEWAY_URL/, sign in with $FREEAGENT_API_KEY)"
status_of() { $bin/freeagent status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }

out=$($bin/freeagent submit examples/hello --platform android --no-git-meta --json)
id=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "submitted $id"
until [[ "$(status_of "$id")" =~ ^(completed|failed|cancelled)$ ]]; do sleep 0.2; done
$bin/freeagent status "$id"
$bin/freeagent download "$id" -o "$data/hello.apk"
echo "--- log ---"
$bin/freeagent logs "$id"

echo "--- a long build, cancelled ---"
printf 'echo "a build that takes five minutes"\nsleep 300\n' > "$slow/build.sh"
out=$($bin/freeagent submit "$slow" --platform android --no-git-meta --json)
slow_id=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "submitted $slow_id"
until [[ "$(status_of "$slow_id")" =~ ^(assigned|building)$ ]]; do sleep 0.2; done
$bin/freeagent cancel "$slow_id"
$bin/freeagent status "$slow_id"
