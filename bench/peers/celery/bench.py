"""Celery peer benchmark: prints ONE JSON object, like taskwire-bench.

  python bench.py throughput N   submit N no-op tasks, then collect every result
  python bench.py sequential N   one task at a time: submit, wait for its result

The worker (`celery -A tasks worker --concurrency 2`, prefork) is started by
bench/peers/celery.sh; this is the client side only.
"""
import json
import sys
import time

from tasks import noop

TIMEOUT_S = 180


def cpu_s(pid):
    """utime + stime of a process, in seconds (USER_HZ is 100 on Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def percentile(sorted_us, q):
    if not sorted_us:
        return None
    i = min(len(sorted_us) - 1, max(0, round(q * len(sorted_us) + 0.5) - 1))
    return sorted_us[i]


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    # Warm-up: the worker is up and the result backend answers.
    noop.delay().get(timeout=120)
    before = cpu_s("self")
    if mode == "throughput":
        start = time.perf_counter()
        results = [noop.delay() for _ in range(n)]
        submitted = time.perf_counter() - start
        failures = 0
        for r in results:
            try:
                r.get(timeout=TIMEOUT_S)
            except Exception:  # noqa: BLE001 (a failed task, whatever it raised, counts; it does not stop the run)
                failures += 1
        wall = time.perf_counter() - start
        report = {
            "mode": "tasks", "peer": "celery", "count": n, "completed": n - failures,
            "failures": failures, "wall_s": wall, "submit_s": submitted, "tasks_per_s": n / wall,
        }
    elif mode == "sequential":
        samples = []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            noop.delay().get(timeout=TIMEOUT_S)
            samples.append((time.perf_counter_ns() - t0) // 1000)
        wall = time.perf_counter() - start
        samples.sort()
        report = {
            "mode": "tasks", "peer": "celery", "count": n, "completed": n, "failures": 0,
            "in_flight": 1, "connections": 1, "wall_s": wall, "tasks_per_s": n / wall,
            "latency_us": {q: percentile(samples, v) for q, v in
                           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999))},
        }
    else:
        raise SystemExit(f"unknown mode {mode}")
    report["client_cpu_s"] = cpu_s("self") - before
    print(json.dumps(report))


if __name__ == "__main__":
    main()
