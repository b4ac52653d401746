#!/usr/bin/env bash
# Installs the peers by package name: Debian redis-server, PyPI celery[redis]
# (in bench/.venv, pinned by celery/requirements.txt), npm bullmq + ioredis
# (bench/peers/bullmq/node_modules, pinned by package-lock.json). Safe to
# re-run: it skips what is there. Install errors are shown, not hidden.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="$(dirname "$here")"

if ! command -v redis-server >/dev/null; then
    echo "installing redis-server (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq redis-server >&2
    # The package starts a system instance on 6379; the benchmark starts its own.
    (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi

if [ ! -x "$bench/.venv/bin/celery" ]; then
    echo "installing celery[redis] (pip, in bench/.venv)" >&2
    python3 -m venv "$bench/.venv"
    "$bench/.venv/bin/pip" install -q --disable-pip-version-check -r "$here/celery/requirements.txt" >&2
fi

if [ ! -d "$here/bullmq/node_modules/bullmq" ]; then
    echo "installing bullmq + ioredis (npm ci)" >&2
    if [ -f "$here/bullmq/package-lock.json" ]; then
        (cd "$here/bullmq" && npm ci --no-audit --no-fund --loglevel=error) >&2
    else
        (cd "$here/bullmq" && npm install --no-audit --no-fund --loglevel=error bullmq ioredis) >&2
    fi
fi
