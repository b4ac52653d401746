#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/, one after the other, one process each.
#
#   scripts/fuzz.sh                  # every target for 25 s (the smoke run of scripts/test.sh)
#   scripts/fuzz.sh 1800             # every target for 30 minutes (the longer run)
#   scripts/fuzz.sh 600 booklet_odt  # some targets only
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz from crates.io if it is missing. Each target starts from its
# committed seeds (fuzz/seeds/<target>/) plus what earlier runs found
# (fuzz/corpus/<target>/, not committed). A crash stops the script with its
# input saved under fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# and turn it into a regression test in the ordinary suite (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(client_decode worker_decode booklet_input booklet_odt config_toml)
seconds="${1:-25}"
shift || true
if [ "$#" -gt 0 ]; then TARGETS=("$@"); fi

# cargo-fuzz needs nightly's -Z flags. Without a nightly toolchain, the
# stable one is told to accept them (RUSTC_BOOTSTRAP), which cargo-fuzz's
# sanitizer builds work with.
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install)" >&2
  cargo install --locked --quiet cargo-fuzz
fi

cargo "${toolchain[@]}" fuzz build
logs=target/fuzz-logs
mkdir -p "$logs"
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="$logs/$target.log"
  printf 'fuzz: %s for %s s (log: %s)\n' "$target" "$seconds" "$log"
  status=0
  # -timeout: an input that takes over 10 s counts as a hang (a failure).
  # Text targets get room for long strings (libFuzzer's default length
  # follows the largest seed, and the decoders' bounds start above it).
  extra=()
  case "$target" in
    client_decode | worker_decode) extra=(-max_len=16384) ;;
    config_toml) extra=(-max_len=8192) ;;
  esac
  cargo "${toolchain[@]}" fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units)' "$log" | sed 's/^/  /' || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (exit $status); the end of its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds} s without a failure"
