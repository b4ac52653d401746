#!/usr/bin/env bash
# External workers next to the built-in `echo` and Celery's no-op task, in
# the same run: a managed stdio worker (bench/workers/noop.mjs, Node.js, 64
# slots) and a remote WebSocket worker (`taskwire-bench worker`, 64 slots),
# each serving a no-op task; throughput (8 connections x 64 in flight),
# sequential latency (1 x 1), and the server's CPU per task (the workers'
# own CPU is not counted: they are other processes).
#
#   bench/workers.sh                 # 3 rounds, about 5 minutes on 2 cores
#   RUNS=1 N=20000 bench/workers.sh
#
# Results: target/bench/workers-<time>/results.jsonl and tables.md.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
RUNS="${RUNS:-3}"
N="${N:-200000}"          # tasks per throughput measurement
SEQ_N="${SEQ_N:-20000}"   # tasks per sequential measurement
CELERY_N="${CELERY_N:-3000}"
CELERY_SEQ_N="${CELERY_SEQ_N:-2000}"

out="${BENCH_OUT:-$root/target/bench/workers-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
export BENCH_LOG_DIR="$out"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

log "building taskwire and taskwire-bench (release)"
cargo build --release -q -p taskwire -p taskwire-bench
TW="$root/target/release/taskwire"
BENCH="$root/target/release/taskwire-bench"
# Celery only (the peer of this comparison), as bench/peers/install.sh does it.
if [ ! -x "$root/bench/.venv/bin/celery" ]; then
    log "installing celery[redis] (pip, in bench/.venv)"
    python3 -m venv "$root/bench/.venv"
    "$root/bench/.venv/bin/pip" install -q --disable-pip-version-check 'celery[redis]' >&2
fi

rand() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
TASKWIRE_API_KEY="bench-$(rand)"
export TASKWIRE_API_KEY
TASKWIRE_WORKER_KEY="benchw-$(rand)"
export TASKWIRE_WORKER_KEY
config="$out/taskwire.toml"
cat >"$config" <<TOML
[[workers]]
name = "noop"
command = [$(printf '"%s"' "$(command -v node)"), "$root/bench/workers/noop.mjs"]

[[api_keys]]
name = "bench-worker"
sha256 = "$(printf '%s' "$TASKWIRE_WORKER_KEY" | sha256sum | cut -d' ' -f1)"
role = "worker"
TOML

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
server_pid="" worker_pid="" redis_pid=""
cleanup() {
    for pid in "$worker_pid" "$server_pid" "$redis_pid"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    true
}
trap cleanup EXIT

record() {
    local name="$1" round="$2" line
    shift 2
    if ! line="$(timeout -k 10 400 "$@" 2>>"$out/bench.log" | tail -n 1)"; then
        log "$name (round $round) failed: $line"
    fi
    [ -z "$line" ] && line='{"error":"no output"}'
    printf '{"name":"%s","round":%s,"result":%s}\n' "$name" "$round" "$line" >>"$results"
    log "$name round $round: $(printf '%s' "$line" | cut -c1-160)"
}

for round in $(seq "$RUNS"); do
    log "round $round of $RUNS"
    printf '{"name":"loadavg","round":%s,"result":{"load1":%s}}\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"
    port="$(free_port)"
    "$TW" serve --config "$config" --listen "127.0.0.1:$port" >>"$out/taskwire.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
    "$BENCH" worker --url "ws://127.0.0.1:$port/v1/worker" --task remote_noop --slots 64 >>"$out/worker.log" 2>&1 &
    worker_pid=$!
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/v1/admin/workers" -H "Authorization: Bearer $TASKWIRE_API_KEY" >/dev/null 2>&1 || true
        "$BENCH" tasks --url "ws://127.0.0.1:$port/v1/ws" --connections 1 --in-flight 1 --count 1 --task remote_noop >/dev/null 2>&1 && break
        sleep 0.05
    done
    ws="ws://127.0.0.1:$port/v1/ws"
    for pair in "builtin_echo:echo" "managed_noop:noop" "remote_noop:remote_noop"; do
        name="${pair%%:*}" task="${pair#*:}"
        record "${name}_8x64" "$round" "$BENCH" tasks --url "$ws" --connections 8 --in-flight 64 \
            --count "$N" --task "$task" --input '{}' --server-pid "$server_pid"
        record "${name}_sequential" "$round" "$BENCH" tasks --url "$ws" --connections 1 --in-flight 1 \
            --count "$SEQ_N" --task "$task" --input '{}' --server-pid "$server_pid"
    done
    kill -TERM "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; worker_pid=""
    kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""

    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    record celery_throughput "$round" "$root/bench/peers/celery.sh" "redis://127.0.0.1:$redis_port/0" throughput "$CELERY_N"
    redis-cli -p "$redis_port" flushall >/dev/null
    record celery_sequential "$round" "$root/bench/peers/celery.sh" "redis://127.0.0.1:$redis_port/0" sequential "$CELERY_SEQ_N"
    kill -TERM "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
done

python3 - "$results" <<'PY' | tee "$out/tables.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def vals(name, *path):
    out = []
    for r in runs:
        if r["name"] != name: continue
        v = r["result"]
        for p in path: v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)): out.append((r["round"], float(v)))
    return out
def cell(pairs, fmt="{:,.0f}"):
    xs = sorted(v for _, v in pairs)
    if not xs: return "–"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(xs[0])}–{fmt.format(xs[-1])})"
def ratio(a, b, path):
    A, B = dict(vals(a, *path)), dict(vals(b, *path))
    return [(r, A[r] / B[r]) for r in A if r in B and B[r]]
print("| measurement | tasks/s | p50 µs | p99 µs | server CPU µs/task |")
print("| --- | --- | --- | --- | --- |")
for name, what in [("builtin_echo_8x64", "built-in `echo`, 8 × 64"), ("managed_noop_8x64", "managed stdio `noop` (Node, 64 slots), 8 × 64"),
                   ("remote_noop_8x64", "remote WebSocket `noop` (64 slots), 8 × 64"), ("builtin_echo_sequential", "built-in `echo`, 1 × 1"),
                   ("managed_noop_sequential", "managed stdio `noop`, 1 × 1"), ("remote_noop_sequential", "remote WebSocket `noop`, 1 × 1")]:
    print(f"| {what} | {cell(vals(name, 'tasks_per_s'))} | {cell(vals(name, 'latency_us', 'p50'))} | {cell(vals(name, 'latency_us', 'p99'))} | {cell(vals(name, 'server_cpu_us_per_task'), '{:,.1f}')} |")
print(f"| Celery no-op, delay × N then get each (prefork 2) | {cell(vals('celery_throughput', 'tasks_per_s'))} | | | |")
print(f"| Celery no-op, one at a time | {cell(vals('celery_sequential', 'tasks_per_s'))} | | | |")
print()
print("| ratio (same round) | median (min–max) | goal |")
print("| --- | --- | --- |")
print(f"| server CPU per task: managed ÷ built-in | {cell(ratio('managed_noop_8x64', 'builtin_echo_8x64', ['server_cpu_us_per_task']), '{:.2f}')} | ≤ 2 |")
print(f"| server CPU per task: remote ÷ built-in | {cell(ratio('remote_noop_8x64', 'builtin_echo_8x64', ['server_cpu_us_per_task']), '{:.2f}')} | ≤ 2 |")
print(f"| managed stdio worker ÷ Celery throughput | {cell(ratio('managed_noop_8x64', 'celery_throughput', ['tasks_per_s']), '{:.0f}')} | ≥ 20 |")
print(f"| remote WebSocket worker ÷ Celery throughput | {cell(ratio('remote_noop_8x64', 'celery_throughput', ['tasks_per_s']), '{:.0f}')} | ≥ 20 |")
PY
log "results in $out"
