#!/usr/bin/env bash
# The Indico plugin's tests, in a real Indico 3.3 (scripts/test.sh runs this as one step).
#
#   scripts/test-indico.sh            # ruff, the pytest suite, the end-to-end test in Chromium
#   scripts/test-indico.sh pytest     # only ruff and the pytest suite
#   scripts/test-indico.sh e2e        # only the end-to-end test
#   SCREENSHOTS=1 scripts/test-indico.sh e2e   # also refresh docs/screenshot-indico-*.png
#   BIG=0 scripts/test-indico.sh e2e  # skip the 3,000-contribution run
#
# Installs what is missing: Debian's postgresql, redis-server and chromium;
# Indico (pinned in integrations/indico/requirements-test.txt) into
# target/indico-venv, once (reused while the pin is unchanged), with the
# plugin installed editable; playwright-core from the e2e package-lock.json.
# Starts its own PostgreSQL (initdb in a temp dir, as the postgres user, on a
# free loopback port, UTF8, unaccent + pg_trgm), Redis, `taskwire serve` and
# `indico run`, each on a free loopback port, and stops each by pid on exit.
# Fails if any plugin test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
what=${1:-all}
plugin="$root/integrations/indico"
venv="$root/target/indico-venv"
step() { printf '\n==> indico: %s\n' "$*"; }
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

need_apt postgresql redis-server
[ "$what" = pytest ] || need_apt chromium

# --- Python 3.12 and Indico ----------------------------------------------------
# Indico 3.3 needs Python 3.12 (it declares >= 3.12.2; 3.12.1 runs it, hence
# --ignore-requires-python). Debian 12 has no 3.12: take pyenv's, or any python3.12.
python312=""
for candidate in "${PYTHON312:-}" /root/.pyenv/versions/3.12.*/bin/python3.12 "$(command -v python3.12 || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then python312=$candidate; fi
done
if [ -z "$python312" ]; then
  echo "test-indico.sh: no Python 3.12 found (set PYTHON312=/path/to/python3.12)" >&2
  exit 1
fi
stamp="$venv/.installed-$(sha256sum "$plugin/requirements-test.txt" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  step "installing Indico into target/indico-venv (once)"
  t0=$SECONDS
  rm -rf "$venv"
  "$python312" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --ignore-requires-python -r "$plugin/requirements-test.txt"
  touch "$stamp"
  echo "installed in $((SECONDS - t0)) s"
fi
if ! "$venv/bin/pip" show -q indico-plugin-taskwire >/dev/null 2>&1; then
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$plugin"
fi

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
  done
  if [ -n "$pg_started" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT INT TERM

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

# --- pytest ----------------------------------------------------------------------
if [ "$what" = all ] || [ "$what" = pytest ]; then
  step "ruff"
  (cd "$plugin" && "$venv/bin/ruff" check --no-cache . && "$venv/bin/ruff" format --no-cache --check .)
  step "pytest (Indico's fixtures, real PostgreSQL and Redis)"
  junit="$tmp/pytest.xml"
  (cd "$plugin" && INDICO_TEST_DATABASE_URI="postgresql://indico@127.0.0.1:$pg_port/indico_test" \
    INDICO_TEST_REDIS_CACHE_URL="redis://127.0.0.1:$redis_port/0" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$junit")
  skipped=$(python3 -c 'import sys, xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); s=r if r.tag=="testsuite" else r.find("testsuite"); print(int(s.get("skipped",0)))' "$junit")
  if [ "$skipped" != 0 ]; then
    echo "test-indico.sh: $skipped plugin test(s) were skipped: a skipped test is a failed suite" >&2
    exit 1
  fi
fi

# --- end to end ---------------------------------------------------------------------
if [ "$what" = all ] || [ "$what" = e2e ]; then
  step "end to end: indico run + taskwire serve + Chromium"
  if [ -z "${TASKWIRE_BIN:-}" ]; then
    cargo build --quiet --bin taskwire
    TASKWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/taskwire"
  fi
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
DEBUG = True
SYSTEM_NOTICES_URL = None
CHECKIN_APP_URL = None
PLUGINS = {'taskwire'}
PLUGIN_TASKWIRE_SECRET = '$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')'
EOF
  export INDICO_CONFIG="$tmp/indico/indico.conf"
  t0=$SECONDS
  "$venv/bin/indico" db prepare >"$tmp/db-prepare.log" 2>&1 || { cat "$tmp/db-prepare.log"; exit 1; }
  if [ "${BIG:-1}" = 1 ]; then
    cargo build --quiet --example booklet
    "${CARGO_TARGET_DIR:-$root/target}/debug/examples/booklet" generated:8:3000 "$tmp/big.json"  # seed 8: the plugin shape
    export SEED_BIG="$tmp/big.json"
  fi
  # Seeds users, the conference and (with SEED_BIG) the 3,000-contribution event; prints JSON for the test.
  TASKWIRE_KEY_SMALL="$key_small" TASKWIRE_KEY_BIG="$key_big" \
    "$venv/bin/python" "$plugin/tests/e2e/seed.py" >"$tmp/seed.json"
  echo "database prepared and seeded in $((SECONDS - t0)) s"
  "$venv/bin/indico" run -h 127.0.0.1 -p "$indico_port" -q --reloader none >"$tmp/indico.log" 2>&1 &
  pids+=($!)
  wait_for "indico on $indico_port" 90 curl -sf -o /dev/null "$INDICO_URL/"
  node_flags=()
  if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then node_flags+=(--experimental-websocket); fi
  status=0
  TASKWIRE_KEY_SMALL="$key_small" SEED_JSON="$tmp/seed.json" ODF_VALIDATE="$root/scripts/odf-validate.sh" \
    ROOT="$root" NODE_NO_WARNINGS=1 \
    node "${node_flags[@]}" --test --test-concurrency=1 "$e2e"/*.test.mjs >"$tmp/e2e.out" 2>&1 || status=$?
  cat "$tmp/e2e.out"
  if [ "$status" = 0 ] && ! grep -q '^# skipped 0$' "$tmp/e2e.out"; then
    echo "test-indico.sh: an end-to-end test was skipped: a skipped test is a failed suite" >&2
    status=1
  fi
  if [ "$status" != 0 ]; then
    echo "--- indico.log (tail)"; tail -n 60 "$tmp/indico.log"
    echo "--- taskwire.log (tail)"; tail -n 20 "$tmp/taskwire.log"
    exit "$status"
  fi
fi
step "all passed"
