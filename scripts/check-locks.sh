#!/usr/bin/env bash
# Proves that every lock file in the repository installs as it is, with its
# ordinary client, in a scratch directory (nothing in the tree is touched):
#   * each package-lock.json: `npm ci` (optional platform packages included;
#     install scripts are not run, they build nothing the check needs);
#   * each pinned Python requirements file (*requirements*.txt): every line
#     pinned with `==`, then `pip install -r` into a fresh venv (unless the file
#     names the step that installs it into a fresh venv of its own interpreter);
#   * each Cargo.lock: in sync with its manifests (`cargo metadata --locked`).
# Warm npm and pip caches make it take seconds; a cold run downloads each
# package once.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
n=0

while IFS= read -r lock; do
  dir="$(dirname "$lock")"
  work="$scratch/npm-$n"
  n=$((n + 1))
  mkdir -p "$work"
  cp "$dir/package.json" "$lock" "$work/"
  if (cd "$work" && npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "ok   npm ci: $lock"
  else
    echo "FAIL npm ci: $lock" >&2
    failed=1
  fi
done < <(git ls-files '*package-lock.json')

while IFS= read -r requirements; do
  # One requirement per logical line: `\` continuations (pip-compile's
  # `--hash` lines) are joined first, comments dropped.
  unpinned="$(awk '{ if (sub(/\\[[:space:]]*$/, "")) { line = line $0 } else { print line $0; line = "" } }' "$requirements" \
    | sed 's/[[:space:]]#.*$//' | grep -Ev '^[[:space:]]*(#|$)' | grep -v '==' || true)"
  if [ -n "$unpinned" ]; then
    echo "FAIL $requirements: not pinned with ==:" >&2
    printf '  %s\n' "$unpinned" >&2
    failed=1
    continue
  fi
  # A file another step installs into a fresh venv of its own interpreter says so (Indico 3.3
  # needs Python 3.12, not this python3): that step's install is the check, not a second one.
  installer="$(sed -n 's/^# Installed (the lock-file check) by: *//p' "$requirements" | head -n 1)"
  if [ -n "$installer" ]; then
    echo "ok   pinned with ==: $requirements (installed by $installer)"
    continue
  fi
  venv="$scratch/venv-$n"
  n=$((n + 1))
  python3 -m venv "$venv"
  if "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"; then
    echo "ok   pip install -r: $requirements"
  else
    echo "FAIL pip install -r: $requirements" >&2
    failed=1
  fi
done < <(git ls-files '*requirements*.txt')

while IFS= read -r lock; do
  manifest="$(dirname "$lock")/Cargo.toml"
  toolchain=()
  # The fuzz crate builds on nightly only (its manifest says cargo-fuzz).
  if grep -q '^cargo-fuzz = true' "$manifest" && cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
  fi
  if cargo "${toolchain[@]}" metadata --locked --format-version 1 --manifest-path "$manifest" >/dev/null; then
    echo "ok   cargo --locked: $lock"
  else
    echo "FAIL cargo --locked: $lock" >&2
    failed=1
  fi
done < <(git ls-files '*Cargo.lock')

exit "$failed"
