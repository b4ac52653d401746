#!/usr/bin/env bash
# Before/after throughput of two taskwire binaries in the same run: rounds
# alternate A, B, A, B ... so both see the same machine; prints each run,
# the medians and the per-round ratio B/A (tasks/s and server CPU µs/task),
# then instructions per task of each server under callgrind (stable where
# times are not).
#
#   bench/compare.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   N=200000 SEQ_N=20000 CALLGRIND_N=5000 bench/compare.sh ...
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
A="$1"; B="$2"; ROUNDS="${3:-5}"
N="${N:-200000}"; CALLGRIND_N="${CALLGRIND_N:-5000}"
BENCH="${BENCH:-$root/target/release/taskwire-bench}"
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY
out="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() {
    port="$(free_port)"
    "$@" serve --listen "127.0.0.1:$port" >>"$out/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 400); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "server not ready" >&2; exit 1
}
stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
run() { # label binary
    start "$2"
    "$BENCH" tasks --url "ws://127.0.0.1:$port/v1/ws" --connections 8 --in-flight 64 --count "$N" \
        --task echo --input '{}' --server-pid "$pid" 2>>"$out/bench.log" | tail -n 1 >"$out/$1.json"
    stop
    python3 -c "import json,sys; r=json.load(open('$out/$1.json')); print(r.get('tasks_per_s'), r.get('server_cpu_us_per_task'))"
}
: >"$out/rows"
for round in $(seq "$ROUNDS"); do
    a="$(run "a$round" "$A")"; b="$(run "b$round" "$B")"
    echo "round $round: A $a | B $b (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "$a $b" >>"$out/rows"
done
python3 - "$out/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs)
print(f"tasks/s   median A {med([r[0] for r in rows]):,.0f}  B {med([r[2] for r in rows]):,.0f}  ratio B/A per round {[round(r[2]/r[0],2) for r in rows]} median {med([r[2]/r[0] for r in rows]):.2f}")
print(f"server CPU µs/task  median A {med([r[1] for r in rows]):.1f}  B {med([r[3] for r in rows]):.1f}  ratio B/A {med([r[3]/r[1] for r in rows]):.2f}")
PY
if command -v valgrind >/dev/null; then
    for label in A B; do
        bin="$A"; [ "$label" = B ] && bin="$B"
        port="$(free_port)"
        valgrind --tool=callgrind --callgrind-out-file="$out/cg.$label" "$bin" serve --listen "127.0.0.1:$port" >>"$out/server.log" 2>&1 &
        pid=$!
        for _ in $(seq 1200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
        "$BENCH" tasks --url "ws://127.0.0.1:$port/v1/ws" --connections 1 --in-flight 1 --count "$CALLGRIND_N" \
            --task echo --input '{}' 2>>"$out/bench.log" >/dev/null
        stop
        total="$(grep -m1 '^summary:' "$out/cg.$label" | awk '{print $2}')"
        echo "callgrind $label: $total instructions for startup + $CALLGRIND_N sequential echo tasks + shutdown"
    done
fi
echo "(logs in $out)"
