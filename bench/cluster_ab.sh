#!/usr/bin/env bash
# Two builds of taskwire compared back to back in cluster mode: one node on
# one nats-server (fresh store each time), ROUNDS rounds, each running build
# A then build B. Per run: no-op `echo` throughput at 8 connections x 64 in
# flight (THR_N tasks after 2,000 to warm up), node and NATS CPU per task
# over that phase (from /proc) and, where `perf` is installed, the node's
# instructions per task (user and kernel: stable where times are not on a
# shared machine), then the sequential p50 (SEQ_N tasks, 1 in flight). One
# JSON line per run; the ratios to take are within a round.
#
#   A=/path/to/old/taskwire B=target/release/taskwire bench/cluster_ab.sh
#   (ROUNDS=3 THR_N=20000 SEQ_N=1000 by default; taskwire-bench from
#   target/release, built if missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-3}"
THR_N="${THR_N:-20000}"
SEQ_N="${SEQ_N:-1000}"
: "${A:?set A to the first build's taskwire binary}"
: "${B:?set B to the second build's taskwire binary}"
BENCH="$root/target/release/taskwire-bench"
[ -x "$BENCH" ] || cargo build --release -q -p taskwire-bench
NATS="$(scripts/nats-server.sh)"
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
dir="$(mktemp -d)"
trap 'stop_all; rm -rf "$dir"' EXIT

one() { # LABEL BINARY
    local np tp
    np="$(free_port)"; tp="$(free_port)"
    rm -rf "$dir/nats"
    "$NATS" -js -a 127.0.0.1 -p "$np" -sd "$dir/nats" >>"$dir/nats.log" 2>&1 &
    local nats_pid=$!; pids+=("$nats_pid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$np") 2>/dev/null && break; sleep 0.05; done
    "$2" serve --listen "127.0.0.1:$tp" --workers 64 \
        --cluster-nats-url "nats://127.0.0.1:$np" --cluster-node n1 >>"$dir/taskwire.log" 2>&1 &
    local node_pid=$!; pids+=("$node_pid")
    for _ in $(seq 400); do curl -fs "http://127.0.0.1:$tp/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
    local url="ws://127.0.0.1:$tp/v1/ws"
    "$BENCH" tasks --url "$url" --connections 8 --in-flight 64 --count 2000 --task echo --input '{}' >/dev/null 2>&1
    local a b thr seq a2 b2 hz
    a="$(ticks "$node_pid")"; b="$(ticks "$nats_pid")"
    local perf_pid=""
    rm -f "$dir/perf.csv"
    if command -v perf >/dev/null; then
        perf stat -x, -e instructions:u,instructions:k -p "$node_pid" -o "$dir/perf.csv" &
        perf_pid=$!
    fi
    thr="$("$BENCH" tasks --url "$url" --connections 8 --in-flight 64 --count "$THR_N" --task echo --input '{}' 2>/dev/null | tail -n 1)"
    a2="$(ticks "$node_pid")"; b2="$(ticks "$nats_pid")"; hz="$(getconf CLK_TCK)"
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    local instr
    instr="$(awk -F, '/instructions/ {printf "%s ", $1}' "$dir/perf.csv" 2>/dev/null || true)"
    seq="$("$BENCH" tasks --url "$url" --connections 1 --in-flight 1 --count "$SEQ_N" --task echo --input '{}' 2>/dev/null | tail -n 1)"
    python3 - "$1" "$thr" "$seq" "$((a2 - a))" "$((b2 - b))" "$hz" "$THR_N" "$(cut -d' ' -f1 /proc/loadavg)" "$instr" <<'PY'
import json, sys
label, thr, seq, node, nats, hz, n, load, instr = sys.argv[1:]
thr, seq, hz, n = json.loads(thr), json.loads(seq), int(hz), int(n)
us = lambda t: round(int(t) * 1e6 / hz / n, 1)
row = {"build": label, "tasks_per_s": round(thr["tasks_per_s"]),
       "node_cpu_us_per_task": us(node), "nats_cpu_us_per_task": us(nats),
       "seq_p50_us": seq["latency_us"]["p50"], "load": float(load)}
counts = [int(c) for c in instr.split() if c.isdigit()]
if len(counts) == 2:
    row["node_instructions_per_task"] = {"user": round(counts[0] / n), "kernel": round(counts[1] / n)}
print(json.dumps(row))
PY
    stop_all
}

for _ in $(seq "$ROUNDS"); do
    one A "$A"
    one B "$B"
done
