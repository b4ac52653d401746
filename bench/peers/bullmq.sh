#!/usr/bin/env bash
# BullMQ peer: a worker process (concurrency 50), then the client
# (bench.mjs). Prints one JSON object.
#   bullmq.sh REDIS_PORT throughput|sequential N
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export REDIS_PORT="$1"
mode="$2" n="$3"
cd "$here/bullmq"
log="${BENCH_LOG_DIR:-/tmp}/bullmq-worker.log"
node worker.mjs >"$log" 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q ready "$log" 2>/dev/null && break; sleep 0.1; done
node bench.mjs "$mode" "$n"
