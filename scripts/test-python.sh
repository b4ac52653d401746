#!/usr/bin/env bash
# The Python package's checks, against a real `taskwire serve`:
#   1. the venv of scripts/python-venv.sh (pinned test requirements, hashes
#      checked, and `pip install ./python`);
#   2. ruff (lint and format) and mypy --strict;
#   3. pytest with TASKWIRE_REQUIRE_ALL=1: a skipped test fails the run.
# The server binary is TASKWIRE_BIN, else target/debug/taskwire (built here).
#   scripts/test-python.sh                 # everything
#   scripts/test-python.sh -k reconnect    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$(scripts/python-venv.sh)

if [ -z "${TASKWIRE_BIN:-}" ]; then
  cargo build --quiet --bin taskwire
  export TASKWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/taskwire"
fi

cd "$root/python"
"$venv/bin/ruff" check . ../examples/python
"$venv/bin/ruff" format --check . ../examples/python
"$venv/bin/mypy"
# `taskwire` here is the installed package (src/ is not on the path).
TASKWIRE_REQUIRE_ALL=1 "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
