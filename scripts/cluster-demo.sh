#!/usr/bin/env bash
# Starts a local demo cluster: one nats-server with JetStream and three
# `taskwire serve` nodes (a, b, c) on loopback ports, with one shared admin
# key. Ctrl-C stops everything it started (by pid).
#
#   scripts/cluster-demo.sh            # nodes on 8081, 8082, 8083; NATS on 4222
set -euo pipefail
cd "$(dirname "$0")/.."
nats="$(scripts/nats-server.sh)"
cargo build --release -q -p taskwire
tw="$PWD/target/release/taskwire"
dir="$(mktemp -d -t taskwire-cluster-XXXX)"
key="tw_demo_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
digest="$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)"
printf '[[api_keys]]\nname = "demo"\nsha256 = "%s"\nadmin = true\n' "$digest" >"$dir/taskwire.toml"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
"$nats" -js -a 127.0.0.1 -p "${NATS_PORT:-4222}" -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  node="$(printf '%b' "\\$(printf '%03o' $((96 + i)))")"
  "$tw" serve --config "$dir/taskwire.toml" --listen "127.0.0.1:808$i" \
    --cluster-nats-url "nats://127.0.0.1:${NATS_PORT:-4222}" --cluster-node "$node" \
    >"$dir/$node.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:808$i/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
cat <<EOT
Demo cluster (logs in $dir):
  node a: http://127.0.0.1:8081/#key=$key
  node b: http://127.0.0.1:8082/#key=$key
  node c: http://127.0.0.1:8083/monitor#key=$key
Try: curl -s -X POST localhost:8081/v1/tasks -H "Authorization: Bearer $key" -d '{"task":"sleep","input":{"ms":3000,"steps":3}}'
     then follow it from another node: curl -N localhost:8083/v1/tasks/<task_id>/events -H "Authorization: Bearer $key"
Ctrl-C stops the cluster.
EOT
wait
