#!/usr/bin/env bash
# Runs the whole farm on this machine, submits examples/hello, waits for it, downloads the
# artifact (checking its SHA-256), prints the log, and stops the farm.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --quiet
bin=./target/debug
data=$(mktemp -d)
export FREEAGENT_API_KEY=${FREEAGENT_API_KEY:-fak_demo_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export FREEAGENT_GATEWAY_URL=http://127.0.0.1:${GATEWAY_PORT:-8080}
$bin/freeagent dev --data-dir "$data" --workers 2 --gateway-port "${GATEWAY_PORT:-8080}" > "$data/farm.log" 2>&1 &
farm=$!
trap 'kill -INT $farm 2>/dev/null; wait $farm 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 120); do
  curl -fs "$FREEAGENT_GATEWAY_URL/readyz" >/dev/null 2>&1 && break
  kill -0 $farm 2>/dev/null || { cat "$data/farm.log"; exit 1; }
  sleep 0.5
done
echo "farm is up at $FREEAGENT_GATEWAY_URL"
out=$($bin/freeagent submit examples/hello --platform android --json)
id=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "submitted $id"
until $bin/freeagent status "$id" --json | grep -q '"status":"completed"\|"status":"failed"'; do sleep 0.2; done
$bin/freeagent status "$id"
$bin/freeagent download "$id" -o "$data/hello.apk"
echo "--- log ---"
$bin/freeagent logs "$id"
