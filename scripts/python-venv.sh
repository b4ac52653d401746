#!/usr/bin/env bash
# Makes sure the Python venv of the tests and benchmarks exists and is current:
# ${TASKWIRE_PY_VENV:-target/python-venv} with python/requirements-test.txt
# (hashes checked) and the package from python/ installed as `pip install`
# would. Prints the venv's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${TASKWIRE_PY_VENV:-$root/target/python-venv}
reqs=$root/python/requirements-test.txt
stamp=$venv/.requirements.sha256

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "python-venv.sh: Python 3.11 or newer is needed as python3" >&2; exit 1; }
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up $venv (pinned test requirements)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$reqs" >&2
  echo "$want" >"$stamp"
fi
# The package itself; its build backend is pinned above, so nothing unpinned is fetched.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  --force-reinstall "$root/python" >&2
echo "$venv"
