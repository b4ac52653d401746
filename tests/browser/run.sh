#!/usr/bin/env bash
# End-to-end tests of taskwire's browser side (static/): taskwire.js in Node,
# <taskwire-button>, the demo and monitoring pages in Debian chromium driven by
# playwright-core, all against a real `taskwire serve`.
#
#   bash tests/browser/run.sh                 # build the server, run the tests
#   TASKWIRE_BIN=/path/to/taskwire bash tests/browser/run.sh
#   SCREENSHOTS=1 bash tests/browser/run.sh   # also refresh docs/screenshot-*.png
#   bash tests/browser/run.sh widget.test.mjs # some test files only
#
# Installs what it needs itself: chromium from Debian (apt-get; never a
# browser download) and playwright-core from package-lock.json (npm ci).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v node >/dev/null 2>&1; then
  echo "run.sh: Node.js 20 or newer is required" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "run.sh: Node.js 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "run.sh: installing chromium from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq chromium >/dev/null
fi

cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ -z "${TASKWIRE_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet --bin taskwire)
  export TASKWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/taskwire"
fi

# taskwire.js uses the global WebSocket, built into Node 22; Node 20 needs a flag.
node_flags=()
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
  node_flags+=(--experimental-websocket)
fi
export NODE_NO_WARNINGS=1

if [ "$#" -gt 0 ]; then files=("$@"); else files=(*.test.mjs); fi
status=0
# One file at a time: each starts its own server and browser (2-core machines).
node "${node_flags[@]}" --test --test-concurrency=1 "${files[@]}" || status=$?

if [ "${SCREENSHOTS:-}" = "1" ]; then
  mkdir -p "$root/docs"
  node "${node_flags[@]}" screenshots.mjs || status=$?
fi
exit "$status"
