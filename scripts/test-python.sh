#!/usr/bin/env bash
# The Python package's checks, against a real `taskwire serve`:
#   1. a venv at ${TASKWIRE_PY_VENV:-target/python-venv} with the pinned test
#      requirements (python/requirements-test.txt, hashes checked), created on
#      first use;
#   2. `pip install ./python` into it (the package as a user installs it);
#   3. ruff (lint and format), mypy --strict;
#   4. pytest, with TASKWIRE_REQUIRE_ALL=1: a skipped test fails the run.
# The server binary is TASKWIRE_BIN, else target/debug/taskwire (built here).
#   scripts/test-python.sh                 # everything
#   scripts/test-python.sh -k reconnect    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${TASKWIRE_PY_VENV:-$root/target/python-venv}
reqs=$root/python/requirements-test.txt
stamp=$venv/.requirements.sha256

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "test-python.sh: Python 3.11 or newer is needed as python3" >&2; exit 1; }
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up $venv (pinned test requirements)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$reqs"
  echo "$want" >"$stamp"
fi

# The package itself, as `pip install ./python` does (the build backend is pinned
# in the requirements, so no unpinned download happens here).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  --force-reinstall "$root/python"

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
