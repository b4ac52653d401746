"""Markdown tables from bench/run.sh's results.jsonl: medians with min–max
over rounds, ratios taken within each round, and the goals of issue 7.

    python3 bench/report.py results.jsonl [env.txt]
"""
import json
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(dict)  # name -> round -> result
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                row = json.loads(line)
                runs[row["name"]][row["round"]] = row["result"]
    return runs


def get(result, path):
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def values(runs, name, path):
    return [v for r in sorted(runs.get(name, {})) if (v := get(runs[name][r], path)) is not None]


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def med(vs):
    return statistics.median(vs) if vs else None


def cell(vs):
    """median (min–max), or just the value for one round."""
    if not vs:
        return "–"
    if len(vs) == 1:
        return fmt(vs[0])
    return f"{fmt(med(vs))} ({fmt(min(vs))}–{fmt(max(vs))})"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def ratio_per_round(runs, top, bottom, path="tasks_per_s"):
    out = []
    for r in sorted(runs.get(top, {})):
        a = get(runs[top][r], path)
        b = get(runs.get(bottom, {}).get(r, {}), path)
        if a is not None and b:
            out.append(a / b)
    return out


def main():
    runs = load(sys.argv[1])
    n_rounds = max((len(v) for v in runs.values()), default=0)
    print(f"Medians of {n_rounds} rounds, (min–max) across rounds.\n")
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            print("```\n" + f.read().strip() + "\n```\n")
    loads = values(runs, "loadavg", "load1")
    if loads:
        print("1-minute load average at the start of each round (the machine is shared): "
              + ", ".join(fmt(x) for x in loads) + "\n")

    print("### Task throughput and latency (no-op `echo`; peers: no-op task)\n")
    rows = []
    for name, label in [
        ("taskwire_echo_8x64", "taskwire, 8 conns × 64 in flight, unpinned"),
        ("taskwire_echo_8x64_pinned", "taskwire, 8 × 64, server cpu 0, client cpu 1"),
        ("taskwire_echo_sequential_pinned", "taskwire, sequential (1 × 1), pinned"),
        ("taskwire_echo_sequential_unpinned_client", "taskwire, sequential (1 × 1), server cpu 0, client unpinned"),
        ("taskwire_echo_sequential_same_core", "taskwire, sequential (1 × 1), server and client both on cpu 0"),
        ("bullmq_throughput", "BullMQ, addBulk N, worker concurrency 50"),
        ("bullmq_sequential", "BullMQ, sequential (add + waitUntilFinished)"),
        ("celery_throughput", "Celery, delay × N then get each, prefork 2"),
        ("celery_sequential", "Celery, sequential (delay().get())"),
    ]:
        if name not in runs:
            continue
        rows.append([
            label,
            cell(values(runs, name, "count")[:1]),
            cell(values(runs, name, "tasks_per_s")),
            cell(values(runs, name, "latency_us.p50")),
            cell(values(runs, name, "latency_us.p90")),
            cell(values(runs, name, "latency_us.p99")),
            cell(values(runs, name, "latency_us.p99_9")),
            cell(values(runs, name, "server_cpu_us_per_task")),
            cell(values(runs, name, "client_cpu_us_per_task")),
        ])
    print(table(["run", "N", "tasks/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs",
                 "server CPU µs/task", "client CPU µs/task"], rows))

    print("\n### Ratios, taken within each round\n")
    rows = []
    for top, bottom, label in [
        ("taskwire_echo_8x64", "bullmq_throughput", "taskwire 8×64 / BullMQ throughput"),
        ("taskwire_echo_8x64", "celery_throughput", "taskwire 8×64 / Celery throughput"),
        ("taskwire_echo_sequential_pinned", "bullmq_sequential", "taskwire / BullMQ sequential tasks/s"),
        ("taskwire_echo_sequential_pinned", "celery_sequential", "taskwire / Celery sequential tasks/s"),
        ("taskwire_echo_8x64_pinned", "taskwire_echo_8x64", "taskwire pinned / unpinned"),
    ]:
        rs = ratio_per_round(runs, top, bottom)
        if rs:
            rows.append([label, cell(rs), ", ".join(f"{r:.1f}×" for r in rs)])
    print(table(["ratio", "median (min–max)", "per round"], rows))

    print("\n### Memory per idle authenticated connection, downloads, booklets\n")
    rows = []
    if "taskwire_conns" in runs:
        n = values(runs, "taskwire_conns", "count")[:1]
        rows.append([f"idle connections ({fmt(n[0]) if n else '?'}), server KiB each",
                     cell(values(runs, "taskwire_conns", "server_kib_per_connection"))])
        rows.append(["  time to open them all, s", cell(values(runs, "taskwire_conns", "open_s"))])
    if "taskwire_download" in runs:
        size = values(runs, "taskwire_download", "size_bytes")[:1]
        label = f"{size[0] / 2**30:.2f} GiB" if size else "blob"
        rows.append([f"download of a {label} link, MB/s (median of each round's fetches)",
                     cell(values(runs, "taskwire_download", "mb_per_s.median"))])
        rows.append(["  making the blob (task), s", cell(values(runs, "taskwire_download", "blob_task_s"))])
    for name in sorted((n for n in runs if n.startswith("taskwire_booklet_")), key=lambda n: int(n.rsplit("_", 1)[1])):
        c = name.rsplit("_", 1)[1]
        mb = values(runs, name, "input_bytes")[:1]
        label = (f"`abstract_booklet`, {c} contributions ({fmt(mb[0] / 1e6) if mb else '?'} MB JSON), "
                 "submit → link, s")
        rows.append([label, cell(values(runs, name, "seconds.median"))])
    if "booklet_probe" in runs:
        probe = next(iter(runs["booklet_probe"].values()))
        why = probe.get("first_error") or probe.get("error") or "?"
        rows.append(["`abstract_booklet`", f"not measured: the task does not complete yet ({why})"])
    print(table(["measure", "median (min–max)"], rows))

    print("\n### Goals of issue 7\n")
    rows = []

    def goal(label, target, vs, ok):
        m = med(vs)
        met = "–" if m is None else ("met" if ok(m) else "**missed**")
        rows.append([label, target, cell(vs), met])

    goal("echo tasks/s, 8 × 64", "≥ 80,000", values(runs, "taskwire_echo_8x64", "tasks_per_s"),
         lambda m: m >= 80_000)
    goal("… ÷ BullMQ (same round)", "≥ 15×", ratio_per_round(runs, "taskwire_echo_8x64", "bullmq_throughput"),
         lambda m: m >= 15)
    goal("… ÷ Celery (same round)", "≥ 100×", ratio_per_round(runs, "taskwire_echo_8x64", "celery_throughput"),
         lambda m: m >= 100)
    goal("sequential p50, pinned, µs", "≤ 60",
         values(runs, "taskwire_echo_sequential_pinned", "latency_us.p50"), lambda m: m <= 60)
    goal("sequential p99, pinned, µs", "≤ 150",
         values(runs, "taskwire_echo_sequential_pinned", "latency_us.p99"), lambda m: m <= 150)
    goal("server memory per idle connection, KiB", "≤ 16",
         values(runs, "taskwire_conns", "server_kib_per_connection"), lambda m: m <= 16)
    goal("booklet 3,000 contributions, submit → link, s", "≤ 0.5",
         values(runs, "taskwire_booklet_3000", "seconds.median"), lambda m: m <= 0.5)
    goal("download of the 1 GiB link, GB/s", "≥ 1",
         [v / 1000 for v in values(runs, "taskwire_download", "mb_per_s.median")], lambda m: m >= 1)
    print(table(["measure", "goal", "median (min–max)", ""], rows))

    errors = [(n, r, res.get("error") or res.get("first_error"))
              for n, rr in runs.items() for r, res in rr.items()
              if n not in ("booklet_probe", "loadavg") and (res.get("error") or res.get("failures"))]
    if errors:
        print("\nErrors and failures:\n")
        for n, r, e in errors:
            print(f"- {n}, round {r}: {e}")


if __name__ == "__main__":
    main()
