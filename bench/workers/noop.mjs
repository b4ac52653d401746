// A managed worker for the benchmark: serves `noop` (completes at once with
// a null result) over stdio, with TASKWIRE_BENCH_SLOTS slots (default 64).
// Standard library only, like examples/workers/textstats.mjs.
import { createInterface } from "node:readline";

const slots = Number(process.env.TASKWIRE_BENCH_SLOTS ?? 64);
const out = [];
let flushing = false;
const send = (message) => {
  out.push(JSON.stringify(message));
  if (!flushing) {
    flushing = true;
    // One write per burst of messages, like the server does.
    queueMicrotask(() => { process.stdout.write(out.join("\n") + "\n"); out.length = 0; flushing = false; });
  }
};
send({ type: "hello", protocol: 1, slots, worker: { name: "noop", sdk: "none" },
  tasks: [{ name: "noop", description: "Completes at once.", retry_safe: true }] });
let beat;
createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.type === "assign") send({ type: "complete", task_id: m.task_id, attempt: m.attempt, result: null });
  else if (m.type === "welcome") beat = setInterval(() => send({ type: "heartbeat" }), m.heartbeat_interval_s * 1000);
}).on("close", () => { clearInterval(beat); process.exit(0); });
