"""The Markdown table of BENCHMARKS.md's cluster section from
bench/cluster.sh's results.jsonl: medians with min-max over rounds, and
ratios taken within each round (then their median).

    python3 bench/cluster_report.py results.jsonl
"""
from __future__ import annotations

import statistics
import sys
from typing import Any

from report import load  # the same results.jsonl format: name -> round -> result

Runs = dict[str, dict[int, Any]]


def get(result: Any, path: str) -> float | None:
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def by_round(runs: Runs, name: str, path: str) -> dict[int, float]:
    return {r: v for r, res in runs.get(name, {}).items() if (v := get(res, path)) is not None}


def cpu_us(runs: Runs, name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for r, res in runs.get(name, {}).items():
        ticks, hz, tasks = res.get("ticks"), res.get("hz"), res.get("tasks")
        if ticks is not None and hz and tasks:
            out[r] = ticks / hz * 1e6 / tasks
    return out


def fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(values: dict[int, float] | list[float]) -> str:
    vs = sorted(values.values()) if isinstance(values, dict) else sorted(values)
    if not vs:
        return "–"
    if len(vs) == 1:
        return fmt(vs[0])
    return f"{fmt(statistics.median(vs))} ({fmt(vs[0])}–{fmt(vs[-1])})"


def ratio(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[r] / b[r] for r in a if b.get(r)]


def main(path: str) -> None:
    runs = load(path)
    rows = [
        ("local mode", "local"),
        ("cluster, 1 node", "cluster1"),
        ("cluster, 3 nodes", "cluster3"),
    ]
    bull_tp = by_round(runs, "bullmq_throughput", "tasks_per_s")
    print("| setup | tasks/s (8 × 64 in flight) | × BullMQ (same round) | p50 / p99 µs, 1 in flight | p50 / p99 µs, 8 × 64 | node CPU µs/task | all processes CPU µs/task |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, key in rows:
        tp = by_round(runs, f"{key}_8x64", "tasks_per_s")
        seq50 = by_round(runs, f"{key}_sequential", "latency_us.p50")
        seq99 = by_round(runs, f"{key}_sequential", "latency_us.p99")
        load50 = by_round(runs, f"{key}_8x64", "latency_us.p50")
        load99 = by_round(runs, f"{key}_8x64", "latency_us.p99")
        node_cpu = by_round(runs, f"{key}_8x64", "server_cpu_us_per_task")
        all_cpu = cpu_us(runs, f"{key}_cpu") if key != "local" else node_cpu
        print(f"| {label} | {cell(tp)} | {cell(ratio(tp, bull_tp))} | {cell(seq50)} / {cell(seq99)} "
              f"| {cell(load50)} / {cell(load99)} | {cell(node_cpu)} | {cell(all_cpu)} |")
    seq50 = by_round(runs, "bullmq_sequential", "latency_us.p50")
    seq99 = by_round(runs, "bullmq_sequential", "latency_us.p99")
    redis = cpu_us(runs, "bullmq_redis_cpu")
    print(f"| BullMQ (Redis) | {cell(bull_tp)} | 1 | {cell(seq50)} / {cell(seq99)} | – | – | {cell(redis)} (Redis only) |")
    loads = [res.get("load1") for res in runs.get("loadavg", {}).values()]
    print(f"\nRounds: {len(runs.get('local_8x64', {}))}; load average at each round's start: {loads}")


if __name__ == "__main__":
    main(sys.argv[1])
