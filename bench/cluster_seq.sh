#!/usr/bin/env bash
# One node on one nats-server, the sequential phase alone (1 connection,
# 1 in flight, no-op `echo`), ROUNDS times, alternated: the servers
# unpinned, both on cpu 0 (the client unpinned), and unpinned with one
# thread each (the node `--threads 1`, nats-server GOMAXPROCS=1). Per
# round: p50, node and NATS CPU per task (from /proc), NATS messages per
# task (from its /varz monitoring endpoint).
#
#   bench/cluster_seq.sh              # ROUNDS=4 SEQ_N=2000, release build
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-4}"
SEQ_N="${SEQ_N:-2000}"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p taskwire -p taskwire-bench
TW="${TW:-$root/target/release/taskwire}"
BENCH="$root/target/release/taskwire-bench"
NATS="$(scripts/nats-server.sh)"
TASKWIRE_API_KEY="bench-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TASKWIRE_API_KEY
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
varz() { curl -fs "http://127.0.0.1:$1/varz" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["in_msgs"], d["out_msgs"])'; }
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT
dir="$(mktemp -d)"

one() { # PIN(none|0|threads)
    local pin=() node_flags=() nats_env=()
    case "$1" in
        none) ;;
        threads) node_flags=(--threads 1); nats_env=(GOMAXPROCS=1) ;;
        *) pin=(taskset -c "$1") ;;
    esac
    local np tp mp
    np="$(free_port)"; tp="$(free_port)"; mp="$(free_port)"
    rm -rf "$dir/nats"
    env "${nats_env[@]}" "${pin[@]}" "$NATS" -js -a 127.0.0.1 -p "$np" -m "$mp" -sd "$dir/nats" >>"$dir/nats.log" 2>&1 &
    local nats_pid=$!; pids+=("$nats_pid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$np") 2>/dev/null && break; sleep 0.05; done
    "${pin[@]}" "$TW" serve --listen "127.0.0.1:$tp" --workers 64 \
        --cluster-nats-url "nats://127.0.0.1:$np" --cluster-node n1 "${node_flags[@]}" >>"$dir/taskwire.log" 2>&1 &
    local node_pid=$!; pids+=("$node_pid")
    for _ in $(seq 400); do curl -fs "http://127.0.0.1:$tp/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
    local url="ws://127.0.0.1:$tp/v1/ws"
    "$BENCH" tasks --url "$url" --connections 1 --in-flight 1 --count 100 --task echo --input '{}' >/dev/null 2>&1
    local a b m line
    a="$(ticks "$node_pid")"; b="$(ticks "$nats_pid")"; m="$(varz "$mp")"
    line="$("$BENCH" tasks --url "$url" --connections 1 --in-flight 1 --count "$SEQ_N" --task echo --input '{}' 2>/dev/null | tail -n 1)"
    local a2 b2 m2 hz
    a2="$(ticks "$node_pid")"; b2="$(ticks "$nats_pid")"; m2="$(varz "$mp")"; hz="$(getconf CLK_TCK)"
    python3 - "$1" "$line" "$((a2 - a))" "$((b2 - b))" "$m" "$m2" "$hz" "$SEQ_N" <<'PY'
import json, sys
pin, line, node, nats, m1, m2, hz, n = sys.argv[1:]
d, n, hz = json.loads(line), int(n), int(hz)
i1, o1 = map(int, m1.split()); i2, o2 = map(int, m2.split())
us = lambda t: round(int(t) * 1e6 / hz / n)
print(json.dumps({"pin": pin, "p50_us": d["latency_us"]["p50"], "p99_us": d["latency_us"]["p99"],
                  "node_cpu_us_per_task": us(node), "nats_cpu_us_per_task": us(nats),
                  "nats_in_per_task": round((i2 - i1) / n, 2), "nats_out_per_task": round((o2 - o1) / n, 2)}))
PY
    stop_all
}

for _ in $(seq "$ROUNDS"); do
    one none
    one 0
    one threads
done
