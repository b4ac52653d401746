#!/usr/bin/env bash
# Celery peer: a worker with Celery's defaults plus `--concurrency 2`
# (prefork, the default pool), Redis as broker and result backend, then the
# client (bench.py). Prints one JSON object.
#   celery.sh REDIS_URL throughput|sequential N
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$(dirname "$here")/.venv"
export CELERY_REDIS_URL="$1"
mode="$2" n="$3"
cd "$here/celery"
"$venv/bin/celery" -A tasks worker --concurrency 2 --pool prefork --loglevel WARNING \
    >"${BENCH_LOG_DIR:-/tmp}/celery-worker.log" 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
"$venv/bin/python" bench.py "$mode" "$n"
