// A test worker over stdio (managed) whose misbehaviour the test chooses.
// Environment: BEHAVE_PIDFILE (append our pid), BEHAVE_HELLO=never|exit,
// BEHAVE_SLOTS, BEHAVE_PREFIX (task name prefix, default "w_"),
// BEHAVE_STDERR (a line written to stderr at start), BEHAVE_CHILD_PIDFILE (starts
// `sleep 600` and appends its pid), BEHAVE_STUBBORN=1
// (ignores SIGTERM and the end of its stdin: only SIGKILL ends it).
// Tasks (input fields): sleep {ms, steps, retry_ms (later attempts)}, file {name, text}, crash {signal?,
// code?}, hang {}, garbage {lines}, ignore_cancel {}, echo (result = input).
import { spawn } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";

const env = process.env;
const send = (m) => process.stdout.write(JSON.stringify(m) + "\n");
if (env.BEHAVE_PIDFILE) appendFileSync(env.BEHAVE_PIDFILE, `${process.pid}\n`);
if (env.BEHAVE_CHILD_PIDFILE) {
  // A child of our own (as a worker's subprocess pool would be).
  const child = spawn("sleep", ["600"], { stdio: "ignore" });
  child.unref();
  appendFileSync(env.BEHAVE_CHILD_PIDFILE, `${child.pid}\n`);
}
if (env.BEHAVE_STDERR) console.error(env.BEHAVE_STDERR);
if (env.BEHAVE_HELLO === "exit") process.exit(3);
const stubborn = env.BEHAVE_STUBBORN === "1";
if (stubborn) { process.on("SIGTERM", () => {}); setInterval(() => {}, 1 << 30); }
const p = env.BEHAVE_PREFIX ?? "w_";
const safe = (env.BEHAVE_RETRY_SAFE ?? "").split(",");
const names = ["sleep", "file", "crash", "hang", "garbage", "ignore_cancel", "echo"];
if (env.BEHAVE_HELLO !== "never") {
  send({ type: "hello", protocol: 1, slots: Number(env.BEHAVE_SLOTS ?? 1),
    worker: { name: "behave", sdk: "none" },
    tasks: names.map((n) => ({ name: p + n, retry_safe: safe.includes(n) })) });
}
const jobs = new Map();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(job) {
  const { task_id, attempt, input } = job;
  const kind = job.task.slice(p.length);
  const state = { cancelled: false };
  jobs.set(task_id, state);
  const end = (m) => { jobs.delete(task_id); send({ task_id, attempt, ...m }); };
  switch (kind) {
    case "sleep": {
      const retry = attempt > 1 && input.retry_ms !== undefined;
      const steps = retry ? 1 : (input.steps ?? 1);
      const ms = retry ? input.retry_ms : (input.ms ?? 0);
      for (let i = 1; i <= steps; i++) {
        await sleep(ms / steps);
        if (state.cancelled) return end({ type: "cancelled" });
        send({ type: "progress", task_id, attempt, progress: i / steps, message: `step ${i}` });
      }
      return end({ type: "complete", result: { slept: ms, attempt, pid: process.pid } });
    }
    case "file":
      writeFileSync(join(job.output_dir, "out.bin"), input.text ?? "");
      send({ type: "progress", task_id, attempt, progress: 0.5 });
      return end({ type: "complete", ref: "c-" + task_id, result: { ok: true },
        files: [{ name: input.name ?? "out.txt", path: "out.bin", content_type: "text/plain" }] });
    case "crash":
      if (input.signal) process.kill(process.pid, input.signal);
      process.exit(input.code ?? 1);
      break;
    case "hang": for (;;) { /* a CPU-bound loop: no heartbeat ever again */ }
    case "garbage":
      for (let i = 0; i < (input.lines ?? 1); i++) process.stdout.write("this is not JSON\n");
      return end({ type: "complete", result: "survived" });
    case "ignore_cancel": return; // never ends, never answers a cancel
    default: return end({ type: "complete", result: input });
  }
}

let beat;
createInterface({ input: process.stdin }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.type === "welcome") beat = setInterval(() => send({ type: "heartbeat" }), m.heartbeat_interval_s * 1000);
  else if (m.type === "assign") run(m);
  else if (m.type === "cancel") { const s = jobs.get(m.task_id); if (s) s.cancelled = true; }
}).on("close", () => { if (!stubborn) { clearInterval(beat); process.exit(0); } });
