#!/usr/bin/env bash
# A/B of two taskwire-bench binaries against the same server binary, in one
# run: rounds alternate A and B, each on a fresh server, and the medians are
# printed. Used to check that a change to the load generator (for example its
# move onto taskwire-client) costs no throughput.
#
#   bench/ab.sh OLD_BENCH NEW_BENCH [SERVER]     # SERVER: target/release/taskwire
#   ROUNDS=5 AB_N=300000 AB_SEQ_N=40000 bench/ab.sh ...
#
# Modes: `tasks` 8 connections x 64 in flight (throughput), and 1 x 1 with
# the server on cpu 0 and the client on cpu 1 (latency, client CPU per task).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
A="$1"
B="$2"
TW="${3:-$root/target/release/taskwire}"
ROUNDS="${ROUNDS:-5}"
AB_N="${AB_N:-300000}"
AB_SEQ_N="${AB_SEQ_N:-40000}"
out="${AB_OUT:-$root/target/bench/ab-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; true; }
trap cleanup EXIT
start_server() {
    port="$(free_port)"
    local pin=()
    [ -n "$1" ] && pin=(taskset -c "$1")
    "${pin[@]}" "$TW" serve --listen "127.0.0.1:$port" >>"$out/taskwire.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$server_pid" 2>/dev/null || { log "server exited"; exit 1; }
        sleep 0.05
    done
    log "server not ready"; exit 1
}
stop_server() { kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
record() {
    local name="$1" side="$2" round="$3"; shift 3
    local line
    line="$(timeout -k 10 400 "$@" 2>>"$out/bench.log" | tail -n 1)" || true
    [ -z "$line" ] && line='{"error":"no output"}'
    printf '{"name":"%s","side":"%s","round":%s,"load1":%s,"result":%s}\n' \
        "$name" "$side" "$round" "$(cut -d' ' -f1 /proc/loadavg)" "$line" >>"$results"
    log "$name $side round $round: $(printf '%s' "$line" | cut -c1-140)"
}
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        bin="$A"; [ "$side" = B ] && bin="$B"
        start_server ""
        record echo_8x64 "$side" "$round" "$bin" tasks --url "ws://127.0.0.1:$port/v1/ws" \
            --connections 8 --in-flight 64 --count "$AB_N" --server-pid "$server_pid"
        stop_server
        start_server 0
        record echo_sequential_pinned "$side" "$round" taskset -c 1 "$bin" --threads 1 tasks \
            --url "ws://127.0.0.1:$port/v1/ws" --connections 1 --in-flight 1 --count "$AB_SEQ_N" \
            --server-pid "$server_pid"
        stop_server
    done
done
python3 - "$results" <<'PY' | tee "$out/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| run | side | tasks/s median (min-max) | p50 µs | client CPU µs/task | server CPU µs/task | rounds |")
print("|---|---|---|---|---|---|---|")
for name in dict.fromkeys(r["name"] for r in rows):
    for side in "AB":
        rs = [r["result"] for r in rows if r["name"] == name and r["side"] == side and "tasks_per_s" in r["result"]]
        if not rs:
            continue
        tps = [r["tasks_per_s"] for r in rs]
        med = lambda k: statistics.median(k)
        print(f"| {name} | {side} | {med(tps):,.0f} ({min(tps):,.0f}-{max(tps):,.0f}) | "
              f"{med([r['latency_us']['p50'] for r in rs]):.0f} | "
              f"{med([r['client_cpu_us_per_task'] for r in rs]):.2f} | "
              f"{med([r['server_cpu_us_per_task'] or 0 for r in rs]):.2f} | {len(rs)} |")
    a = {r["round"]: r["result"].get("tasks_per_s") for r in rows if r["name"] == name and r["side"] == "A"}
    b = {r["round"]: r["result"].get("tasks_per_s") for r in rows if r["name"] == name and r["side"] == "B"}
    ratios = [b[k] / a[k] for k in a if k in b and a[k] and b[k]]
    if ratios:
        print(f"| {name} | B/A per round | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | | | | {len(ratios)} |")
PY
