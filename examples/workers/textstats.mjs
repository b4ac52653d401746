#!/usr/bin/env node
// A taskwire worker in plain Node.js (standard library only, no SDK).
// It speaks the worker protocol (docs/protocol.md Part II) over stdio:
// one JSON object per line, ours on stdout, the server's on stdin; our log
// goes to stderr. Run it as a managed worker:
//
//   [[workers]]
//   name = "text"
//   command = ["node", "examples/workers/textstats.mjs"]
//
// Tasks: `text_stats` ({text}) counts lines, words and characters and
// writes them to `stats.json`; `noop` completes at once (for benchmarks).
import { createInterface } from "node:readline";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const running = new Map(); // task_id -> {attempt, cancelled}
let draining = false;
let stdinClosed = false;
const exitWhenIdle = () => { if (stdinClosed && running.size === 0) process.exit(0); };

send({
  type: "hello", protocol: 1, slots: 1,
  worker: { name: process.env.TASKWIRE_WORKER_NAME ?? "textstats", version: "1.0.0" },
  tasks: [
    { name: "text_stats", description: "Counts lines, words and characters of a text.", retry_safe: true,
      input_schema: { type: "object", required: ["text"], properties: { text: { type: "string" } } } },
    { name: "noop", description: "Completes at once with a null result.", retry_safe: true },
  ],
});

async function textStats({ task_id, attempt, input, output_dir }) {
  const text = input.text;
  const stats = { lines: text.split("\n").length, words: text.split(/\s+/).filter(Boolean).length, chars: [...text].length };
  send({ type: "progress", task_id, attempt, progress: 0.5, message: "counted" });
  await writeFile(join(output_dir, "stats.json"), JSON.stringify(stats));
  return { result: stats, files: [{ name: "stats.json", content_type: "application/json" }] };
}

async function run(job) {
  const { task_id, attempt } = job;
  running.set(task_id, { attempt, cancelled: false });
  try {
    const { result, files } = job.task === "noop" ? { result: null, files: [] } : await textStats(job);
    if (running.get(task_id)?.cancelled) send({ type: "cancelled", task_id, attempt });
    else send({ type: "complete", ref: `${task_id}-${attempt}`, task_id, attempt, result, files });
  } catch (error) {
    send({ type: "fail", task_id, attempt, error: { message: String(error?.message ?? error), code: "Exception" } });
  } finally {
    running.delete(task_id);
    if (draining && running.size === 0) send({ type: "bye", reason: "drained" });
    exitWhenIdle();
  }
}

let heartbeat;
createInterface({ input: process.stdin }).on("line", (line) => {
  const message = JSON.parse(line);
  switch (message.type) {
    case "welcome":
      heartbeat = setInterval(() => send({ type: "heartbeat" }), message.heartbeat_interval_s * 1000);
      break;
    case "assign": run(message); break;
    case "cancel": { const job = running.get(message.task_id); if (job) job.cancelled = true; break; }
    case "drain": draining = true; break;
    case "error": console.error(`server: ${message.error.code}: ${message.error.message}`); break;
    default: break; // ok, heartbeat, and whatever a later server adds
  }
}).on("close", () => { stdinClosed = true; exitWhenIdle(); }); // the server is gone

process.on("SIGTERM", () => {
  draining = true;
  send({ type: "draining", reason: "SIGTERM" });
  if (running.size === 0) { send({ type: "bye", reason: "SIGTERM" }); clearInterval(heartbeat); process.exit(0); }
});
