// BullMQ peer benchmark: prints ONE JSON object, like taskwire-bench.
//   node bench.mjs throughput N   addBulk N no-op jobs, wait until all completed
//   node bench.mjs sequential N   one job at a time: add, waitUntilFinished
// The worker (worker.mjs, concurrency 50) runs in its own process.
import { readFileSync } from 'node:fs';
import { Queue, QueueEvents } from 'bullmq';

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT ?? 6379) };
const [mode, nText] = process.argv.slice(2);
const n = Number(nText);
const TIMEOUT_MS = 180_000;

const cpuS = () => {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(')').pop().trim().split(/\s+/);
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ = 100
};
const percentile = (sorted, q) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * sorted.length + 0.5) - 1))] : null;

const queue = new Queue('bench', { connection });
const events = new QueueEvents('bench', { connection });
await queue.waitUntilReady();
await events.waitUntilReady();
// Warm-up: the worker is up and events flow.
await (await queue.add('noop', {})).waitUntilFinished(events, TIMEOUT_MS);

const before = cpuS();
let report;
if (mode === 'throughput') {
  // Completion is read from the queue's own counts: the events stream is
  // trimmed (about 10,000 entries by default), so counting `completed`
  // events can miss some when the reader falls behind.
  const base = await queue.getJobCounts('completed', 'failed');
  const start = process.hrtime.bigint();
  await queue.addBulk(Array.from({ length: n }, () => ({ name: 'noop', data: {} })));
  const submitted = Number(process.hrtime.bigint() - start) / 1e9;
  const deadline = Date.now() + TIMEOUT_MS;
  let counts;
  for (;;) {
    counts = await queue.getJobCounts('completed', 'failed');
    if (counts.completed - base.completed + counts.failed - base.failed >= n) break;
    if (Date.now() > deadline) { console.error('timed out', counts); process.exit(1); }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  report = { mode: 'tasks', peer: 'bullmq', count: n, completed: counts.completed - base.completed,
             failures: counts.failed - base.failed,
             wall_s: wall, submit_s: submitted, tasks_per_s: n / wall };
} else if (mode === 'sequential') {
  const samples = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i += 1) {
    const t0 = process.hrtime.bigint();
    const job = await queue.add('noop', {});
    await job.waitUntilFinished(events, TIMEOUT_MS);
    samples.push(Number((process.hrtime.bigint() - t0) / 1000n));
  }
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  samples.sort((a, b) => a - b);
  report = { mode: 'tasks', peer: 'bullmq', count: n, completed: n, failures: 0, in_flight: 1, connections: 1,
             wall_s: wall, tasks_per_s: n / wall,
             latency_us: { p50: percentile(samples, 0.5), p90: percentile(samples, 0.9),
                           p99: percentile(samples, 0.99), p99_9: percentile(samples, 0.999) } };
} else {
  throw new Error(`unknown mode ${mode}`);
}
report.client_cpu_s = cpuS() - before;
console.log(JSON.stringify(report));
await events.close();
await queue.close();
process.exit(0);
