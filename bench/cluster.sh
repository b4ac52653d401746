#!/usr/bin/env bash
# Cluster mode against local mode and BullMQ, in the same run, RUNS rounds:
#   - local mode (one `taskwire serve`, no NATS),
#   - cluster mode with 1 node and with 3 nodes on one nats-server
#     (JetStream, file store, one replica), the client on node a,
#   - BullMQ (Redis) as in bench/run.sh.
# No-op `echo` tasks: 8 connections x 64 in flight (throughput) and 1 x 1
# (sequential latency). Nodes run --workers 64: in cluster mode a slot is
# held while its `started` is committed, so slots are the pipeline depth.
#
#   bench/cluster.sh                      # RUNS=3, CL_N=20000, SEQ_N=2000
#   PIN_CPU=0 bench/cluster.sh            # servers (nodes, NATS, Redis) on cpu 0
# With PIN_CPU the servers share one core and the clients run where the
# kernel puts them: on a small VM that takes the cross-core wake-ups out of
# the sequential latency (see BENCHMARKS.md), at the cost of throughput.
# Results: target/bench/cluster-<time>/results.jsonl and the logs; the
# Markdown table of BENCHMARKS.md is printed at the end
# (bench/cluster_report.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
RUNS="${RUNS:-3}"
CL_N="${CL_N:-20000}"
SEQ_N="${SEQ_N:-2000}"
BULLMQ_N="${BULLMQ_N:-40000}"
BULLMQ_SEQ_N="${BULLMQ_SEQ_N:-4000}"
WORKERS="${WORKERS:-64}"
out="${BENCH_OUT:-$root/target/bench/cluster-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the peers' scripts run from elsewhere
results="$out/results.jsonl"
: >"$results"
export BENCH_LOG_DIR="$out"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p taskwire -p taskwire-bench
TW="${TW:-$root/target/release/taskwire}"
BENCH="$root/target/release/taskwire-bench"
NATS="$(scripts/nats-server.sh)"
bullmq=yes
"$root/bench/peers/install.sh" || { log "the peers did not install: BullMQ is left out of this run"; bullmq=""; }
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY

pin=()
[ -z "${PIN_CPU:-}" ] || pin=(taskset -c "$PIN_CPU")

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

# user + system ticks of every process started for this configuration.
ticks_all() {
    local total=0 t
    for pid in "${pids[@]}"; do
        t="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)"
        total=$((total + t))
    done
    echo "$total"
}

wait_ready() {
    for _ in $(seq 400); do
        curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    log "not ready on $1"; exit 1
}

# start_node PORT [flags...]: a node (cluster flags given by the caller).
start_node() {
    local port="$1"; shift
    "${pin[@]}" "$TW" serve --listen "127.0.0.1:$port" --workers "$WORKERS" "$@" >>"$out/taskwire.log" 2>&1 &
    pids+=($!)
    wait_ready "$port"
}

record() {
    local name="$1" round="$2"; shift 2
    local line
    line="$(timeout -k 10 400 "$@" 2>>"$out/bench.log" | tail -n 1)" || true
    [ -z "$line" ] && line='{"error":"no output"}'
    printf '{"name":"%s","round":%s,"result":%s}\n' "$name" "$round" "$line" >>"$results"
    log "$name round $round: $(printf '%s' "$line" | cut -c1-200)"
}

tasks() { # NAME ROUND PORT SERVER_PID CONNS INFLIGHT N
    record "$1" "$2" "$BENCH" tasks --url "ws://127.0.0.1:$3/v1/ws" --connections "$5" \
        --in-flight "$6" --count "$7" --task echo --input '{}' --server-pid "$4"
}

for round in $(seq "$RUNS"); do
    printf '{"name":"loadavg","round":%s,"result":{"load1":%s}}\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"
    # Local mode.
    port="$(free_port)"; start_node "$port"
    tasks local_8x64 "$round" "$port" "${pids[0]}" 8 64 "$CL_N"
    tasks local_sequential "$round" "$port" "${pids[0]}" 1 1 "$SEQ_N"
    stop_all
    for nodes in 1 3; do
        nats_port="$(free_port)"
        rm -rf "$out/nats"; mkdir -p "$out/nats"
        "${pin[@]}" "$NATS" -js -a 127.0.0.1 -p "$nats_port" -sd "$out/nats" >>"$out/nats.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.05; done
        ports=()
        for n in $(seq "$nodes"); do
            p="$(free_port)"; ports+=("$p")
            start_node "$p" --cluster-nats-url "nats://127.0.0.1:$nats_port" --cluster-node "n$n"
        done
        # CPU of every process of the run (NATS and all nodes) over the
        # throughput phase, per task; the bench's own figure is node n1's.
        before="$(ticks_all)"
        tasks "cluster${nodes}_8x64" "$round" "${ports[0]}" "${pids[1]}" 8 64 "$CL_N"
        after="$(ticks_all)"
        printf '{"name":"cluster%s_cpu","round":%s,"result":{"ticks":%s,"hz":%s,"tasks":%s}}\n' \
            "$nodes" "$round" "$((after - before))" "$(getconf CLK_TCK)" "$CL_N" >>"$results"
        tasks "cluster${nodes}_sequential" "$round" "${ports[0]}" "${pids[1]}" 1 1 "$SEQ_N"
        stop_all
    done
    [ -n "$bullmq" ] || continue
    redis_port="$(free_port)"
    "${pin[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    before="$(ticks_all)"
    record bullmq_throughput "$round" "$root/bench/peers/bullmq.sh" "$redis_port" throughput "$BULLMQ_N"
    after="$(ticks_all)"
    # Redis only (the BullMQ worker process is not counted).
    printf '{"name":"bullmq_redis_cpu","round":%s,"result":{"ticks":%s,"hz":%s,"tasks":%s}}\n' \
        "$round" "$((after - before))" "$(getconf CLK_TCK)" "$BULLMQ_N" >>"$results"
    redis-cli -p "$redis_port" flushall >/dev/null
    record bullmq_sequential "$round" "$root/bench/peers/bullmq.sh" "$redis_port" sequential "$BULLMQ_SEQ_N"
    stop_all
done
log "results: $results"
python3 "$root/bench/cluster_report.py" "$results"
