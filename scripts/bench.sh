#!/usr/bin/env bash
# Reproduces every figure in docs/performance.md: the hub pinned to core 0, the load generator
# (`hubbub bench`) on core 1, a fresh hub per scenario. Needs 2 cores and ~20,000 open files.
# Usage: scripts/bench.sh [scenario…]   (fanout-1k fanout-10k throughput capacity storm idle
#        publish-off publish-memory publish-disk publish-durable; default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$PWD/target/release/hubbub
PORT=${PORT:-18765}
URL=http://127.0.0.1:$PORT
HUB_PID=

# History settings for the publish scenarios: channel "hist" keeps history, "bench" does not.
DATA=$(mktemp -d)
cat >"$DATA/memory.toml" <<TOML
[[channels]]
pattern = "hist"
history_size = 10000
history_ttl = "10m"
TOML
cat >"$DATA/disk.toml" <<TOML
[history]
store = "disk"
path = "$DATA/store"
[[channels]]
pattern = "hist"
history_size = 10000
history_ttl = "10m"
TOML

start_hub() {
  taskset -c 0 "$BIN" serve --bind "127.0.0.1:$PORT" ${1:+--config "$1"} >/tmp/hubbub-bench-hub.log 2>&1 &
  HUB_PID=$!
  for _ in $(seq 50); do curl -sf "$URL/api/v1/health" >/dev/null && return; sleep 0.1; done
  echo "hub did not start" >&2; exit 1
}
stop_hub() { kill "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null || true; }
trap 'stop_hub; rm -rf "$DATA"' EXIT
load() { taskset -c 1 "$BIN" bench "$@"; }

run() {
  echo "== $1"
  case $1 in
    publish-disk|publish-durable) start_hub "$DATA/disk.toml" ;;
    publish-*) start_hub "$DATA/memory.toml" ;;
    *) start_hub ;;
  esac
  case $1 in
    publish-off)     load publish --url "$URL" --channel bench --publishers 8 --duration 10s ;;
    publish-memory)  load publish --url "$URL" --channel hist --publishers 8 --duration 10s ;;
    publish-disk)    load publish --url "$URL" --channel hist --publishers 8 --duration 10s ;;
    publish-durable) load publish --url "$URL" --channel hist --publishers 8 --duration 10s --durable ;;
    fanout-1k)  load fanout --url "$URL" --subscribers 1000 --rate 10 --duration 20s ;;
    fanout-10k) load fanout --url "$URL" --subscribers 10000 --rate 10 --duration 20s --publishers 4 ;;
    throughput) load fanout --url "$URL" --subscribers 10000 --rate 60 --duration 20s --publishers 16 ;;
    capacity)   load fanout --url "$URL" --subscribers 10000 --rate 100 --duration 20s --publishers 32 ;;
    storm)      load storm --url "$URL" --connections 10000 --concurrency 256 ;;
    idle)       load idle --url "$URL" --connections 10000 --server-pid "$HUB_PID" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
  stop_hub
}

for s in "${@:-fanout-1k fanout-10k throughput capacity storm idle publish-off publish-memory publish-disk publish-durable}"; do
  for one in $s; do run "$one"; done
done
