#!/usr/bin/env bash
# Runs the whole benchmark: taskwire (unpinned and pinned with taskset),
# then Celery and BullMQ on the same machine, RUNS rounds of each, and
# prints markdown tables (median with min–max; ratios taken within a round).
#
#   bench/run.sh                 # 3 rounds, about 10 minutes on 2 cores
#   RUNS=1 TW_N=100000 bench/run.sh
#
# Everything runs on 127.0.0.1. Results: target/bench/<time>/results.jsonl
# (one line per measurement), tables.md, env.txt, and the logs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

RUNS="${RUNS:-3}"
# Sizes chosen so each measurement takes about 10 s on this 2-core machine.
TW_N="${TW_N:-1000000}"            # echo tasks, 8 connections x 64 in flight
TW_SEQ_N="${TW_SEQ_N:-80000}"     # sequential echo tasks (1 x 1)
CONNS_N="${CONNS_N:-10000}"       # idle authenticated connections
DL_SIZE="${DL_SIZE:-1073741824}"  # the blob (1 GiB)
DL_COUNT="${DL_COUNT:-5}"         # downloads of its link
BOOKLET_SIZES="${BOOKLET_SIZES:-300 3000 10000}"
BOOKLET_RUNS="${BOOKLET_RUNS:-3}"
CELERY_N="${CELERY_N:-3000}"
CELERY_SEQ_N="${CELERY_SEQ_N:-2000}"
BULLMQ_N="${BULLMQ_N:-40000}"
BULLMQ_SEQ_N="${BULLMQ_SEQ_N:-4000}"

out="${BENCH_OUT:-$root/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
export BENCH_LOG_DIR="$out"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

log "building taskwire and taskwire-bench (release)"
cargo build --release -q -p taskwire -p taskwire-bench
TW="$root/target/release/taskwire"
BENCH="$root/target/release/taskwire-bench"
log "installing the peers (once)"
"$root/bench/peers/install.sh"

# A fresh key for this run (no demo key): the server reads TASKWIRE_API_KEY,
# and so does taskwire-bench.
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid=""
redis_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    true
}
trap cleanup EXIT

# start_server CPULIST [serve flags...]: CPULIST "" means unpinned.
start_server() {
    local cpus="$1"
    shift
    port="$(free_port)"
    local pin=()
    [ -n "$cpus" ] && pin=(taskset -c "$cpus")
    "${pin[@]}" "$TW" serve --listen "127.0.0.1:$port" "$@" >>"$out/taskwire.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$server_pid" 2>/dev/null || { log "taskwire serve exited; see $out/taskwire.log"; exit 1; }
        sleep 0.05
    done
    log "taskwire serve not ready after 10 s"
    exit 1
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# record NAME ROUND COMMAND...: runs COMMAND, stores its one JSON line.
record() {
    local name="$1" round="$2"
    shift 2
    local line
    # A safety net: every tool has its own deadline well below this.
    if ! line="$(timeout -k 10 "${STEP_TIMEOUT_S:-400}" "$@" 2>>"$out/bench.log" | tail -n 1)"; then
        log "$name (round $round) failed: $line"
    fi
    [ -z "$line" ] && line='{"error":"no output"}'
    printf '{"name":"%s","round":%s,"result":%s}\n' "$name" "$round" "$line" >>"$results"
    log "$name round $round: $(printf '%s' "$line" | cut -c1-160)"
}

ws() { echo "ws://127.0.0.1:$port/v1/ws"; }

booklet_works=""
for round in $(seq "$RUNS"); do
    log "round $round of $RUNS"
    # The machine is shared: keep the load average next to the numbers.
    printf '{"name":"loadavg","round":%s,"result":{"load1":%s}}\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"

    start_server ""
    record taskwire_echo_8x64 "$round" "$BENCH" tasks --url "$(ws)" --connections 8 --in-flight 64 \
        --count "$TW_N" --task echo --input '{}' --server-pid "$server_pid"
    stop_server

    start_server 0
    record taskwire_echo_8x64_pinned "$round" taskset -c 1 "$BENCH" --threads 1 tasks --url "$(ws)" \
        --connections 8 --in-flight 64 --count "$TW_N" --task echo --input '{}' --server-pid "$server_pid"
    stop_server

    start_server 0
    record taskwire_echo_sequential_pinned "$round" taskset -c 1 "$BENCH" --threads 1 tasks --url "$(ws)" \
        --connections 1 --in-flight 1 --count "$TW_SEQ_N" --task echo --input '{}' --server-pid "$server_pid"
    stop_server

    start_server 0
    record taskwire_echo_sequential_unpinned_client "$round" "$BENCH" tasks --url "$(ws)" \
        --connections 1 --in-flight 1 --count "$TW_SEQ_N" --task echo --input '{}' --server-pid "$server_pid"
    stop_server

    start_server 0
    record taskwire_echo_sequential_same_core "$round" taskset -c 0 "$BENCH" --threads 1 tasks --url "$(ws)" \
        --connections 1 --in-flight 1 --count "$TW_SEQ_N" --task echo --input '{}' --server-pid "$server_pid"
    stop_server

    start_server "" --max-connections $((CONNS_N + 100)) --max-connections-per-ip $((CONNS_N + 100))
    record taskwire_conns "$round" "$BENCH" conns --url "$(ws)" --count "$CONNS_N" --server-pid "$server_pid"
    stop_server

    start_server "" --max-temp-bytes 2147483648
    record taskwire_download "$round" "$BENCH" download --url "http://127.0.0.1:$port" \
        --size "$DL_SIZE" --count "$DL_COUNT"
    stop_server

    # A generated 10,000-contribution event is about 67 MB of JSON, over the
    # default max_message_bytes (64 MiB): this server takes up to 256 MiB.
    start_server "" --max-message-bytes 268435456
    if [ -z "$booklet_works" ]; then
        probe="$("$BENCH" booklet --url "$(ws)" --contributions 10 --runs 1 2>>"$out/bench.log" || true)"
        if printf '%s' "$probe" | jq -e '.completed == 1' >/dev/null 2>&1; then
            booklet_works=yes
        else
            booklet_works=no
            [ -n "$probe" ] || probe='{"error":"no output"}'
            printf '{"name":"booklet_probe","round":%s,"result":%s}\n' "$round" "$probe" >>"$results"
            log "abstract_booklet does not complete yet: $(printf '%s' "$probe" | jq -r '.first_error // .error')"
        fi
    fi
    if [ "$booklet_works" = yes ]; then
        for size in $BOOKLET_SIZES; do
            record "taskwire_booklet_$size" "$round" "$BENCH" booklet --url "$(ws)" \
                --contributions "$size" --runs "$BOOKLET_RUNS"
        done
    fi
    stop_server

    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        >"$out/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis_url="redis://127.0.0.1:$redis_port/0"
    record celery_throughput "$round" "$root/bench/peers/celery.sh" "$redis_url" throughput "$CELERY_N"
    redis-cli -p "$redis_port" flushall >/dev/null
    record celery_sequential "$round" "$root/bench/peers/celery.sh" "$redis_url" sequential "$CELERY_SEQ_N"
    redis-cli -p "$redis_port" flushall >/dev/null
    record bullmq_throughput "$round" "$root/bench/peers/bullmq.sh" "$redis_port" throughput "$BULLMQ_N"
    redis-cli -p "$redis_port" flushall >/dev/null
    record bullmq_sequential "$round" "$root/bench/peers/bullmq.sh" "$redis_port" sequential "$BULLMQ_SEQ_N"
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
done

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc -V)"
    echo "taskwire: $("$TW" --version) ($(git -C "$root" rev-parse --short HEAD))"
    echo "redis: $(redis-server --version | awk '{print $3}')"
    echo "python: $("$root/bench/.venv/bin/python" -V)"
    echo "celery: $("$root/bench/.venv/bin/celery" --version)"
    echo "node: $(node -v)"
    echo "bullmq: $(node -p 'require("./bench/peers/bullmq/node_modules/bullmq/package.json").version')"
    echo "ioredis: $(node -p 'require("./bench/peers/bullmq/node_modules/ioredis/package.json").version')"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/env.txt"

python3 "$root/bench/report.py" "$results" "$out/env.txt" | tee "$out/tables.md"
log "results in $out"
