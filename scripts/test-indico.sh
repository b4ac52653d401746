#!/usr/bin/env bash
# The Indico plugin's tests, in a real Indico 3.3 (scripts/test.sh runs this as one step).
#
#   scripts/test-indico.sh            # ruff, the pytest suite, the end-to-end test in Chromium
#   scripts/test-indico.sh pytest     # only ruff and the pytest suite
#   scripts/test-indico.sh e2e        # only the end-to-end test
#   SCREENSHOTS=1 scripts/test-indico.sh e2e   # also refresh docs/screenshot-indico-*.png
#   BIG=0 scripts/test-indico.sh e2e  # no big event (its test then fails: never a silent skip)
#   RUNS=5 scripts/test-indico.sh e2e # press the big event's button 5 times (median; BENCHMARKS.md)
#   BENCH_ARGS="--against REV --profile" scripts/test-indico.sh bench
#                                     # times the big event's input in one process (bench_serialize.py)
#
# Installs what is missing: Debian's postgresql, redis-server and chromium (one apt run);
# Indico (pinned in integrations/indico/requirements-test.txt) into
# target/indico-venv with uv (pinned; its download cache in target/uv-cache), once
# (reused while the pin is unchanged), with the plugin installed editable;
# playwright-core from the e2e package-lock.json.
# Starts its own PostgreSQL (initdb in a temp dir, as the postgres user, on a
# free loopback port, UTF8, unaccent + pg_trgm), Redis, `taskwire serve` and
# Indico (seed.py, serving as `indico run` does), each on a free loopback
# port, and stops each by pid on exit. pytest runs in the background while
# the end-to-end Indico is seeded and tested (separate databases and Redis
# numbers). Fails if any plugin test was skipped, or none ran.
#
# Time (BENCHMARKS.md, "The Indico plugin"): each Indico start costs about
# 8 s of CPU (imports, model configuration), so the end-to-end database is
# prepared, seeded (the big event in bulk) and served by one process.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
exec 3>&2  # stderr, for messages from inside wait_for's silenced checks
what=${1:-all}
plugin="$root/integrations/indico"
venv="$root/target/indico-venv"
step() { printf '\n==> indico [%ss]: %s\n' "$SECONDS" "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

need_apt() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Polls `cmd` until it succeeds or `secs` pass (a readiness check, not a sleep).
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then echo "timed out after ${secs}s waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}

if [ "$what" = pytest ]; then need_apt postgresql redis-server; else need_apt postgresql redis-server chromium; fi

# --- Python 3.12 and Indico ----------------------------------------------------
# Indico 3.3 needs Python 3.12 (it declares >= 3.12.2; 3.12.1 runs it, hence
# --ignore-requires-python). Debian 12 has no 3.12: take pyenv's, or any python3.12.
python312=""
# The first that runs as 3.12 (a pyenv shim may exist and refuse to run).
for candidate in "${PYTHON312:-}" "$(command -v python3.12 || true)" /root/.pyenv/versions/3.12.*/bin/python3.12; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
    python312=$candidate
    break
  fi
done
if [ -z "$python312" ]; then
  echo "test-indico.sh: no Python 3.12 found (set PYTHON312=/path/to/python3.12)" >&2
  exit 1
fi
stamp="$venv/.installed-$(grep -v '^#' "$plugin/requirements-test.txt" | sha256sum | cut -c1-16)"  # the pins, not the comments
if [ ! -e "$stamp" ]; then
  step "installing Indico into target/indico-venv (once)"
  t0=$SECONDS
  rm -rf "$venv"
  "$python312" -m venv "$venv"
  # uv, at the version Indico's dev extra pins (it lands in the venv anyway), installs the same
  # pinned requirements as pip, downloading in parallel: 1.9 min against pip's 4.2 min here.
  # --python-version 3.12.2 is what pip's --ignore-requires-python was; bytecode is compiled
  # at install as pip does (every later Indico start reads it).
  "$venv/bin/pip" install -q --disable-pip-version-check "uv==0.12.18"
  UV_CACHE_DIR="$root/target/uv-cache" "$venv/bin/uv" pip install -q --python "$venv/bin/python" \
    --python-version 3.12.2 --compile-bytecode -r "$plugin/requirements-test.txt"
  touch "$stamp"
  echo "installed in $((SECONDS - t0)) s"
fi
# The plugin, editable: installed again only when its pyproject.toml changes (entry points).
plugin_stamp="$venv/.plugin-$(sha256sum "$plugin/pyproject.toml" | cut -c1-16)"
if [ ! -e "$plugin_stamp" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$plugin"
  touch "$plugin_stamp"
fi

# --- taskwire (pytest and the end-to-end test each start one) ----------------------
# One cargo run for both, always with the example (it writes the big event's input): built
# apart, or the binary alone, the example's dev-dependency features would make cargo build
# the library twice.
build=()
if [ -z "${TASKWIRE_BIN:-}" ]; then
  build+=(--bin taskwire --example booklet)
elif [ "$what" != pytest ] && [ "${BIG:-1}" = 1 ]; then
  build+=(--example booklet)
fi
if [ ${#build[@]} -gt 0 ]; then
  step "cargo build ${build[*]}"
  cargo build --quiet "${build[@]}"
fi
export TASKWIRE_BIN="${TASKWIRE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/taskwire}"

# --- servers -------------------------------------------------------------------
tmp=$(mktemp -d /tmp/taskwire-indico.XXXXXX)
chmod 755 "$tmp"
pids=()
pg_started=""
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$pg_started" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT INT TERM

big_pid=""
if [ "$what" != pytest ] && [ "${BIG:-1}" = 1 ]; then
  # The big event's input (seed 8: the plugin shape), written while PostgreSQL starts.
  "${CARGO_TARGET_DIR:-$root/target}/debug/examples/booklet" generated:8:3000 "$tmp/big.json" >"$tmp/big.log" 2>&1 &
  big_pid=$!
  pids+=("$big_pid")
fi

step "starting PostgreSQL and Redis"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_port=$(free_port)
mkdir -p "$tmp/pg" "$tmp/pgsock" && chown postgres: "$tmp/pg" "$tmp/pgsock"
runuser -u postgres -- "$pg_bin/initdb" -D "$tmp/pg" -E UTF8 --locale=C.UTF-8 -A trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$tmp/pg" -l "$tmp/pgsock/pg.log" -w \
  -o "-p $pg_port -k $tmp/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
pg_started=1
psql=(psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1)
# A superuser in this throwaway cluster: seed.py switches triggers off for its big bulk insert.
"${psql[@]}" -c "CREATE ROLE indico LOGIN SUPERUSER" >/dev/null
for db in indico_test indico_e2e; do
  "${psql[@]}" -c "CREATE DATABASE $db OWNER indico" >/dev/null
  "${psql[@]}" -d "$db" -c "CREATE EXTENSION unaccent; CREATE EXTENSION pg_trgm;" >/dev/null
done
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no \
  --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_for "redis on $redis_port" 20 redis-cli -p "$redis_port" ping

# --- pytest (in the background) -----------------------------------------------------
pytest_pid=""
junit="$tmp/pytest.xml"
start_pytest() {
  step "pytest (Indico's fixtures, real PostgreSQL and Redis): in the background"
  (cd "$plugin" && INDICO_TEST_DATABASE_URI="postgresql://indico@127.0.0.1:$pg_port/indico_test" \
    INDICO_TEST_REDIS_CACHE_URL="redis://127.0.0.1:$redis_port/0" \
    exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=5 --junitxml="$junit") >"$tmp/pytest.out" 2>&1 &
  pytest_pid=$!
  pids+=("$pytest_pid")
  pytest_t0=$SECONDS
}

# Waits for pytest, prints its output, fails on a failed or skipped test (or no report at all).
finish_pytest() {
  [ -n "$pytest_pid" ] || return 0
  local status=0
  wait "$pytest_pid" || status=$?
  step "pytest: finished after $((SECONDS - pytest_t0)) s"
  cat "$tmp/pytest.out"
  [ "$status" = 0 ] || exit "$status"
  local skipped
  skipped=$(python3 -c 'import sys, xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); s=r if r.tag=="testsuite" else r.find("testsuite"); print(int(s.get("skipped",0)) + (int(s.get("tests",0)) == 0))' "$junit")
  if [ "$skipped" != 0 ]; then
    echo "test-indico.sh: $skipped plugin test(s) were skipped (or none ran): a skipped test is a failed suite" >&2
    exit 1
  fi
}

if [ "$what" = all ] || [ "$what" = pytest ]; then
  step "ruff"
  (cd "$plugin" && "$venv/bin/ruff" check --no-cache . && "$venv/bin/ruff" format --no-cache --check .)
fi
[ "$what" != pytest ] || start_pytest

# --- end to end ---------------------------------------------------------------------
if [ "$what" = all ] || [ "$what" = e2e ] || [ "$what" = bench ]; then
  step "end to end: indico run + taskwire serve + Chromium"
  e2e="$plugin/tests/e2e"
  if [ ! -d "$e2e/node_modules/playwright-core" ]; then
    (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  indico_port=$(free_port)
  taskwire_port=$(free_port)
  export INDICO_URL="http://127.0.0.1:$indico_port" TASKWIRE_URL="http://127.0.0.1:$taskwire_port"
  # The taskwire server: two keys (one per event), Indico's origin allowed.
  keys=$("$venv/bin/python" -c 'import secrets; print("twk_e2e_" + secrets.token_hex(16), "twk_big_" + secrets.token_hex(16))')
  read -r key_small key_big <<<"$keys"
  sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
  cat >"$tmp/taskwire.toml" <<EOF
allowed_origins = ["$INDICO_URL"]
[[api_keys]]
name = "indico-e2e"
sha256 = "sha256:$(sha "$key_small")"
[[api_keys]]
name = "indico-big"
sha256 = "sha256:$(sha "$key_big")"
EOF
  TASKWIRE_API_KEY="" "$TASKWIRE_BIN" serve --config "$tmp/taskwire.toml" --listen "127.0.0.1:$taskwire_port" \
    --temp-dir "$tmp/taskwire-files" >"$tmp/taskwire.log" 2>&1 &
  pids+=($!)
  wait_for "taskwire on $taskwire_port" 30 curl -sf "$TASKWIRE_URL/readyz"

  # Indico: a hand-written indico.conf (the setup wizard refuses root and is interactive).
  mkdir -p "$tmp/indico"/{log,cache,tmp,archive}
  cp "$venv"/lib/python3.12/site-packages/indico/logging.yaml.sample "$tmp/indico/logging.yaml"
  cat >"$tmp/indico/indico.conf" <<EOF
SQLALCHEMY_DATABASE_URI = 'postgresql://indico@127.0.0.1:$pg_port/indico_e2e'
SECRET_KEY = '$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')'
BASE_URL = '$INDICO_URL'
CELERY_BROKER = 'redis://127.0.0.1:$redis_port/1'
REDIS_CACHE_URL = 'redis://127.0.0.1:$redis_port/2'
DEFAULT_TIMEZONE = 'Europe/Zurich'
DEFAULT_LOCALE = 'en_GB'
ENABLE_ROOMBOOKING = False
CACHE_DIR = '$tmp/indico/cache'
TEMP_DIR = '$tmp/indico/tmp'
LOG_DIR = '$tmp/indico/log'
LOGGING_CONFIG_FILE = '$tmp/indico/logging.yaml'
STORAGE_BACKENDS = {'default': 'fs:$tmp/indico/archive'}
ATTACHMENT_STORAGE = 'default'
NO_REPLY_EMAIL = 'noreply@example.org'
SUPPORT_EMAIL = 'support@example.org'
SMTP_SERVER = ('127.0.0.1', 1)
SMTP_USE_CELERY = False
DEBUG = False  # as in production: DEBUG rebuilds Indico's JS globals and translations on every page
SYSTEM_NOTICES_URL = None
CHECKIN_APP_URL = None
PLUGINS = {'taskwire'}
PLUGIN_TASKWIRE_SECRET = '$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')'
EOF
  export INDICO_CONFIG="$tmp/indico/indico.conf"
  t0=$SECONDS
  if [ -n "$big_pid" ]; then
    wait "$big_pid" || { cat "$tmp/big.log"; exit 1; }
    export SEED_BIG="$tmp/big.json"
  fi
  # One Indico start (seed.py): prepares the database (as `indico db prepare`), seeds users, the
  # conference and (with SEED_BIG) the 3,000-contribution event, writes JSON for the test, then
  # serves that Indico as `indico run` does. pytest runs meanwhile (its own database).
  seed_args=("$tmp/seed.json")
  [ "$what" = bench ] || seed_args+=("127.0.0.1:$indico_port")
  TASKWIRE_KEY_SMALL="$key_small" TASKWIRE_KEY_BIG="$key_big" \
    "$venv/bin/python" "$plugin/tests/e2e/seed.py" "${seed_args[@]}" >"$tmp/indico.log" 2>&1 &
  indico_pid=$!
  pids+=("$indico_pid")
  [ "$what" != all ] || start_pytest
  if [ "$what" = bench ]; then
    wait "$indico_pid" || { cat "$tmp/indico.log"; exit 1; }
    cat "$tmp/indico.log"
    step "the big event's input, timed in one process (BENCHMARKS.md)"
    "$venv/bin/python" "$plugin/tests/e2e/bench_serialize.py" "$tmp/seed.json" ${BENCH_ARGS:-}
    exit 0
  fi
  indico_up() {
    kill -0 "$indico_pid" 2>/dev/null || { echo "seed.py exited:" >&3; cat "$tmp/indico.log" >&3; exit 1; }
    curl -sf -o /dev/null "$INDICO_URL/"
  }
  wait_for "indico on $indico_port" 600 indico_up
  grep '^seed.py: ' "$tmp/indico.log" || true
  echo "seeded and serving after $((SECONDS - t0)) s"
  step "end-to-end tests"
  node_flags=()
  if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then node_flags+=(--experimental-websocket); fi
  status=0
  TASKWIRE_KEY_SMALL="$key_small" SEED_JSON="$tmp/seed.json" ODF_VALIDATE="$root/scripts/odf-validate.sh" \
    ROOT="$root" NODE_NO_WARNINGS=1 \
    node "${node_flags[@]}" --test --test-concurrency=1 "$e2e"/*.test.mjs >"$tmp/e2e.out" 2>&1 || status=$?
  cat "$tmp/e2e.out"
  # every test passed: none skipped, none left out ("# tests N" and "# pass N" with N > 0)
  if [ "$status" = 0 ] && ! { grep -q '^# skipped 0$' "$tmp/e2e.out" && grep -q '^# todo 0$' "$tmp/e2e.out" &&
    [ "$(sed -n 's/^# tests \([0-9]*\)$/\1/p' "$tmp/e2e.out")" = "$(sed -n 's/^# pass \([1-9][0-9]*\)$/\1/p' "$tmp/e2e.out")" ]; }; then
    echo "test-indico.sh: an end-to-end test was skipped or did not run: a skipped test is a failed suite" >&2
    status=1
  fi
  if [ "$status" != 0 ]; then
    echo "--- indico.log (tail)"; tail -n 60 "$tmp/indico.log"
    echo "--- taskwire.log (tail)"; tail -n 20 "$tmp/taskwire.log"
    exit "$status"
  fi
fi
finish_pytest
step "all passed"
