#!/usr/bin/env bash
# Reproduces every figure in docs/performance.md: the hub pinned to core 0, the load generator
# (`hubbub bench`) on core 1, a fresh hub per scenario. Needs 2 cores and ~20,000 open files.
# Usage: scripts/bench.sh [scenario…]   (fanout-1k fanout-10k throughput capacity storm idle
#        publish-off publish-memory publish-disk publish-durable
#        latency-1 redis-latency-1 redis-cross-latency-1
#        redis-1k redis-cross-1k redis-throughput redis-2nodes-throughput
#        deflate-off deflate-on deflate-cost tls-throughput tls-1k; default: all)
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
# TLS scenarios: a self-signed certificate for 127.0.0.1 (needs openssl).
tls_config() {
  [ -f "$DATA/tls.toml" ] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -addext extendedKeyUsage=serverAuth -keyout "$DATA/key.pem" -out "$DATA/cert.pem" 2>/dev/null
  printf '[tls]\ncert = "%s"\nkey = "%s"\n' "$DATA/cert.pem" "$DATA/key.pem" >"$DATA/tls.toml"
}

start_hub() {
  taskset -c 0 "$BIN" serve --bind "127.0.0.1:$PORT" ${1:+--config "$1"} >/tmp/hubbub-bench-hub.log 2>&1 &
  HUB_PID=$!
  for _ in $(seq 50); do curl -sf ${HEALTH_URL:+--cacert "$DATA/cert.pem"} "${HEALTH_URL:-$URL}/api/v1/health" >/dev/null && return; sleep 0.1; done
  echo "hub did not start" >&2; exit 1
}
stop_hub() { kill "$HUB_PID" ${HUB2_PID:-} ${REDIS_PID:-} 2>/dev/null || true; wait "$HUB_PID" ${HUB2_PID:-} ${REDIS_PID:-} 2>/dev/null || true; HUB2_PID=; REDIS_PID=; }
trap 'stop_hub; rm -rf "$DATA"' EXIT

# Redis scenarios: a redis-server of the script's own (needs redis-server installed), and nodes
# on the Redis broker.
REDIS_PORT=${REDIS_PORT:-16379}
PORT2=$((PORT + 1))
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start" >&2; exit 1
}
start_node() { # CORE PORT
  HUBBUB_BROKER=redis HUBBUB_REDIS__URL="redis://127.0.0.1:$REDIS_PORT" HUBBUB_REDIS__PREFIX="bench$$" \
    taskset -c "$1" "$BIN" serve --bind "127.0.0.1:$2" >>/tmp/hubbub-bench-hub.log 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$2/api/v1/health" | grep -q '"status":"ok"' && { echo $pid; return; }; sleep 0.1; done
  echo "node did not start" >&2; exit 1
}
load() { taskset -c 1 "$BIN" bench "$@"; }
# CPU seconds (user + system) the hub process has used so far.
hub_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$HUB_PID/stat"; }

run() {
  echo "== $1"
  case $1 in
    publish-disk|publish-durable) start_hub "$DATA/disk.toml" ;;
    publish-*) start_hub "$DATA/memory.toml" ;;
    redis-cross-*) start_redis; HUB_PID=$(start_node 0 "$PORT"); HUB2_PID=$(start_node 1 "$PORT2") ;;
    redis-2nodes-*) start_redis; HUB_PID=$(start_node 0 "$PORT"); HUB2_PID=$(start_node 0 "$PORT2") ;;
    redis-*) start_redis; HUB_PID=$(start_node 0 "$PORT") ;;
    deflate-cost) ;;
    tls-*) tls_config; HEALTH_URL=https://127.0.0.1:$PORT start_hub "$DATA/tls.toml" ;;
    *) start_hub ;;
  esac
  case $1 in
    latency-1)        load fanout --url "$URL" --subscribers 1 --rate 200 --duration 10s ;;
    redis-latency-1)  load fanout --url "$URL" --subscribers 1 --rate 200 --duration 10s ;;
    redis-cross-latency-1) load fanout --url "http://127.0.0.1:$PORT2" --subscribe-url "$URL" --subscribers 1 --rate 200 --duration 10s ;;
    redis-1k)         load fanout --url "$URL" --subscribers 1000 --rate 10 --duration 20s ;;
    redis-cross-1k)   load fanout --url "http://127.0.0.1:$PORT2" --subscribe-url "$URL" --subscribers 1000 --rate 10 --duration 20s ;;
    redis-throughput) load fanout --url "$URL" --subscribers 10000 --rate 60 --duration 20s --publishers 16 ;;
    redis-2nodes-throughput) load fanout --url "$URL" --subscribe-url "$URL" --subscribe-url "http://127.0.0.1:$PORT2" \
                        --subscribers 10000 --rate 60 --duration 20s --publishers 16 ;;
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
    # The same 2 KiB events to 1,000 subscribers without and with permessage-deflate.
    deflate-off|deflate-on)
      before=$(hub_cpu)
      load fanout --url "$URL" --subscribers 1000 --rate 20 --duration 20s --size 2048 $([ "$1" = deflate-on ] && echo --deflate)
      echo "hub cpu seconds: $(awk -v a="$before" -v b="$(hub_cpu)" 'BEGIN { printf "%.2f", b - a }')" ;;
    deflate-cost) for size in 256 2048 16384; do load deflate --size "$size"; done ;;
    # wss:// and https://: the same loads as throughput and fanout-1k (at 100/s) over TLS.
    tls-throughput) load fanout --url "https://127.0.0.1:$PORT" --ca-file "$DATA/cert.pem" --subscribers 10000 --rate 60 --duration 20s --publishers 16 ;;
    tls-1k)     load fanout --url "https://127.0.0.1:$PORT" --ca-file "$DATA/cert.pem" --subscribers 1000 --rate 100 --duration 20s --publishers 4 ;;
    plain-1k)   load fanout --url "$URL" --subscribers 1000 --rate 100 --duration 20s --publishers 4 ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
  stop_hub
}

for s in "${@:-fanout-1k fanout-10k throughput capacity storm idle publish-off publish-memory publish-disk publish-durable latency-1 redis-latency-1 redis-cross-latency-1 redis-1k redis-cross-1k redis-throughput redis-2nodes-throughput deflate-off deflate-on deflate-cost tls-throughput tls-1k plain-1k}"; do
  for one in $s; do run "$one"; done
done
