"""Markdown tables from bench/python.sh's results.jsonl: medians with min–max
over rounds; ratios to Celery taken within each round.

    python3 bench/python_report.py results.jsonl [env.txt]
"""
import json
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(dict)  # name -> round -> row
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                runs[row["name"]][row["round"]] = row
    return runs


def get(row, path):
    value = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fmt(x, unit=""):
    if x is None:
        return "–"
    text = f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"
    return text + unit


def summary(xs, unit=""):
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt(xs[0], unit)
    return f"{fmt(statistics.median(xs), unit)} ({fmt(min(xs))}–{fmt(max(xs))})"


def series(runs, name, path):
    return [v for r in sorted(runs.get(name, {})) if (v := get(runs[name][r], path)) is not None]


def per_task_us(runs, name):
    out = []
    for r in sorted(runs.get(name, {})):
        row = runs[name][r]
        cpu, done = row.get("worker_cpu_s"), get(row, "result.completed")
        if isinstance(cpu, (int, float)) and done:
            out.append(cpu / done * 1e6)
    return out


def same_round(runs, a, b, path):
    """a / b of `path`, round by round (rounds where both have it)."""
    ratios = []
    for r in sorted(runs.get(a, {})):
        x = get(runs[a][r], path)
        y = get(runs.get(b, {}).get(r, {}), path)
        if x and y:
            ratios.append(x / y)
    return ratios


def main():
    runs = load(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2], encoding="utf-8") as env:
            print("```\n" + env.read().strip() + "\n```\n")
    rows = [
        ("Python worker over stdio (managed), 8×64", "python_stdio_throughput"),
        ("Python worker over WebSocket (remote), 8×64", "python_websocket_throughput"),
        ("Node.js worker over stdio (bench/workers/noop.mjs), 8×64", "node_stdio_throughput"),
        ("Celery, delay × N then get each, prefork 2", "celery_throughput"),
        ("Python worker over stdio, sequential 1×1", "python_stdio_sequential"),
        ("Python worker over WebSocket, sequential 1×1", "python_websocket_sequential"),
        ("Node.js worker over stdio, sequential 1×1", "node_stdio_sequential"),
        ("Celery, sequential (delay().get())", "celery_sequential"),
    ]
    print("| no-op task | tasks | tasks/s | p50 µs | p99 µs | worker CPU µs/task | server CPU µs/task |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, name in rows:
        count = series(runs, name, "result.count")
        print(f"| {label} | {fmt(count[0]) if count else '–'} "
              f"| {summary(series(runs, name, 'result.tasks_per_s'))} "
              f"| {summary(series(runs, name, 'result.latency_us.p50'))} "
              f"| {summary(series(runs, name, 'result.latency_us.p99'))} "
              f"| {summary(per_task_us(runs, name))} "
              f"| {summary(series(runs, name, 'result.server_cpu_us_per_task'))} |")
    print()
    print("| ratio (same round) | median (min–max) | per round | goal |")
    print("| --- | ---: | --- | --- |")
    for label, a, b, goal in (
        ("stdio / Celery throughput", "python_stdio_throughput", "celery_throughput", 10),
        ("WebSocket / Celery throughput", "python_websocket_throughput", "celery_throughput", 10),
        ("stdio / Celery sequential tasks/s", "python_stdio_sequential", "celery_sequential", None),
        ("WebSocket / Celery sequential tasks/s", "python_websocket_sequential",
         "celery_sequential", None),
    ):
        ratios = same_round(runs, a, b, "result.tasks_per_s")
        met = ""
        if goal is not None and ratios:
            met = f"≥ {goal}×: " + ("met" if statistics.median(ratios) >= goal else "**missed**")
        print(f"| {label} | {summary(ratios, '×')} | "
              f"{', '.join(f'{x:.1f}×' for x in ratios) or '–'} | {met} |")

    print()
    print("| server CPU per task (same round) | median (min–max) | per round |")
    print("| --- | ---: | --- |")
    for label, a, b in (
        ("Python stdio ÷ Node.js stdio, 8×64", "python_stdio_throughput", "node_stdio_throughput"),
        ("Python stdio ÷ Python WebSocket, 8×64", "python_stdio_throughput",
         "python_websocket_throughput"),
        ("Python stdio ÷ Node.js stdio, 1×1", "python_stdio_sequential", "node_stdio_sequential"),
        ("Python stdio ÷ Python WebSocket, 1×1", "python_stdio_sequential",
         "python_websocket_sequential"),
    ):
        ratios = same_round(runs, a, b, "result.server_cpu_us_per_task")
        print(f"| {label} | {summary(ratios, '×')} | "
              f"{', '.join(f'{x:.2f}×' for x in ratios) or '–'} |")
    loads = [get(runs["loadavg"][r], "result.load1") for r in sorted(runs.get("loadavg", {}))]
    if loads:
        print()
        print("1-minute load average at the start of each round: "
              + ", ".join(f"{x:.2f}" for x in loads if x is not None))


if __name__ == "__main__":
    main()
