#!/usr/bin/env bash
# The Python worker benchmark: a no-op Python task (`py_noop`) served by ONE
# Python worker process, over stdio (managed by taskwire serve) and over
# WebSocket (a remote worker), next to Celery's no-op task (prefork 2, Redis)
# and to the Node.js managed worker of bench/workers.sh (bench/workers/noop.mjs,
# the stdio baseline: what the server's stdio path costs with a lean worker)
# in the same run; RUNS rounds, medians with min–max, ratios within a round.
#
#   bench/python.sh                     # 3 rounds
#   RUNS=1 PY_N=20000 bench/python.sh
#
# Each taskwire measurement is taskwire-bench `tasks` (8 connections x 64 in
# flight for throughput; 1 x 1 for latency). Results: target/bench/python-<time>/.
# TW=… BENCH=… use given release binaries instead of building them.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

RUNS="${RUNS:-3}"
PY_N="${PY_N:-60000}"           # no-op tasks, 8 connections x 64 in flight
PY_SEQ_N="${PY_SEQ_N:-10000}"   # sequential no-op tasks (1 x 1)
PY_SLOTS="${PY_SLOTS:-64}"      # the worker's slots
CELERY_N="${CELERY_N:-3000}"
CELERY_SEQ_N="${CELERY_SEQ_N:-2000}"

out="${BENCH_OUT:-$root/target/bench/python-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
export BENCH_LOG_DIR="$out"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [ -z "${TW:-}" ] || [ -z "${BENCH:-}" ]; then
    log "building taskwire and taskwire-bench (release)"
    cargo build --release -q -p taskwire -p taskwire-bench
fi
TW="${TW:-$root/target/release/taskwire}"
BENCH="${BENCH:-$root/target/release/taskwire-bench}"
log "the Python venv, Celery and Redis (once)"
venv="$(scripts/python-venv.sh)"
PY="$venv/bin/python"
NODE="$(command -v node)" || { log "node (Node.js) is needed for the stdio baseline"; exit 1; }
# Celery and Redis as bench/peers/install.sh installs them (BullMQ is not needed here).
if ! command -v redis-server >/dev/null; then
    log "installing redis-server (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
    (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi
if [ ! -x "$root/bench/.venv/bin/celery" ]; then
    python3 -m venv "$root/bench/.venv"
    "$root/bench/.venv/bin/pip" install -q --disable-pip-version-check 'celery[redis]' >&2
fi

rand() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
TASKWIRE_API_KEY="bench-$(rand)"
export TASKWIRE_API_KEY
WORKER_KEY="benchw-$(rand)"
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid="" redis_pid="" worker_pid=""
cleanup() {
    for pid in "$worker_pid" "$server_pid" "$redis_pid"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    true
}
trap cleanup EXIT

# config MODE: the server's config file (keys; a [[workers]] group for stdio).
config() {
    local file="$out/taskwire-$1.toml"
    cat >"$file" <<TOML
[[api_keys]]
name = "bench"
sha256 = "$(digest "$TASKWIRE_API_KEY")"

[[api_keys]]
name = "bench-worker"
sha256 = "$(digest "$WORKER_KEY")"
role = "worker"
TOML
    if [ "$1" = stdio ]; then
        cat >>"$file" <<TOML

[[workers]]
name = "py"
command = ["$PY", "$root/bench/peers/python/noop_worker.py"]
env = { BENCH_SLOTS = "$PY_SLOTS" }
TOML
    elif [ "$1" = node ]; then
        cat >>"$file" <<TOML

[[workers]]
name = "noop"
command = ["$NODE", "$root/bench/workers/noop.mjs"]
env = { TASKWIRE_BENCH_SLOTS = "$PY_SLOTS" }
TOML
    fi
    echo "$file"
}

start_server() {
    port="$(free_port)"
    "$TW" serve --config "$1" --listen "127.0.0.1:$port" >>"$out/taskwire.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$server_pid" 2>/dev/null || { log "taskwire serve exited; see $out/taskwire.log"; exit 1; }
        sleep 0.05
    done
    log "taskwire serve not up after 10 s"; exit 1
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

cpu_s() { # utime + stime of a pid, in seconds
    awk '{ split($0, a, ") "); split(a[2], f, " "); printf "%.2f", (f[12] + f[13]) / 100 }' "/proc/$1/stat"
}

record() { # NAME ROUND WORKER_PID COMMAND...
    local name="$1" round="$2" wpid="$3" line before after
    shift 3
    before=0
    [ "$wpid" != - ] && before="$(cpu_s "$wpid")"
    if ! line="$(timeout -k 10 "${STEP_TIMEOUT_S:-400}" "$@" 2>>"$out/bench.log" | tail -n 1)"; then
        log "$name (round $round) failed: $line"
    fi
    local cpu=null
    [ "$wpid" != - ] && after="$(cpu_s "$wpid")" && cpu="$(awk "BEGIN { print $after - $before }")"
    [ -z "$line" ] && line='{"error":"no output"}'
    printf '{"name":"%s","round":%s,"result":%s,"worker_cpu_s":%s}\n' "$name" "$round" "$line" \
        "$cpu" >>"$results"
    log "$name round $round: $(printf '%s' "$line" | cut -c1-160)"
}

measure() { # PREFIX ROUND WORKER_PID [TASK]
    local ws="ws://127.0.0.1:$port/v1/ws" task="${4:-py_noop}"
    "$PY" "$root/bench/peers/python/ready.py" "http://127.0.0.1:$port" "$TASKWIRE_API_KEY" "$task"
    record "${1}_throughput" "$2" "$3" "$BENCH" tasks --url "$ws" --connections 8 --in-flight 64 \
        --count "$PY_N" --task "$task" --input '{}' --server-pid "$server_pid"
    record "${1}_sequential" "$2" "$3" "$BENCH" tasks --url "$ws" --connections 1 --in-flight 1 \
        --count "$PY_SEQ_N" --task "$task" --input '{}' --server-pid "$server_pid"
}

managed_worker_pid() { # the worker process under the server (past a launcher)
    local pid child
    pid="$(pgrep -P "$server_pid" | head -n 1)"
    child="$(pgrep -P "$pid" | head -n 1 || true)"
    echo "${child:-$pid}"
}

for round in $(seq "$RUNS"); do
    log "round $round of $RUNS"
    printf '{"name":"loadavg","round":%s,"result":{"load1":%s}}\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"

    start_server "$(config stdio)"
    "$PY" "$root/bench/peers/python/ready.py" "http://127.0.0.1:$port" "$TASKWIRE_API_KEY"
    worker_pid="$(managed_worker_pid)"
    measure python_stdio "$round" "$worker_pid"
    worker_pid=""
    stop_server

    start_server "$(config node)"
    "$PY" "$root/bench/peers/python/ready.py" "http://127.0.0.1:$port" "$TASKWIRE_API_KEY" noop
    worker_pid="$(managed_worker_pid)"
    measure node_stdio "$round" "$worker_pid" noop
    worker_pid=""
    stop_server

    start_server "$(config websocket)"
    TASKWIRE_URL="http://127.0.0.1:$port" TASKWIRE_WORKER_KEY="$WORKER_KEY" BENCH_SLOTS="$PY_SLOTS" \
        "$PY" "$root/bench/peers/python/noop_worker.py" >>"$out/worker.log" 2>&1 &
    worker_pid=$!
    measure python_websocket "$round" "$worker_pid"
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
    worker_pid=""
    stop_server

    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$out/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis_url="redis://127.0.0.1:$redis_port/0"
    record celery_throughput "$round" - "$root/bench/peers/celery.sh" "$redis_url" throughput "$CELERY_N"
    redis-cli -p "$redis_port" flushall >/dev/null
    record celery_sequential "$round" - "$root/bench/peers/celery.sh" "$redis_url" sequential "$CELERY_SEQ_N"
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
done

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "taskwire: $("$TW" --version) ($(git -C "$root" rev-parse --short HEAD))"
    echo "python: $("$PY" -V), taskwire-python $("$PY" -c 'import taskwire; print(taskwire.__version__)'), websockets $("$PY" -c 'import websockets; print(websockets.__version__)')"
    echo "celery: $("$root/bench/.venv/bin/celery" --version)"
    echo "node: $("$NODE" --version)"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/env.txt"

python3 "$root/bench/python_report.py" "$results" "$out/env.txt" | tee "$out/tables.md"
log "results in $out"
