// The monitoring page: an admin key's live view of every task on the server.
//
// It sends the admin-only `watch` message (docs/protocol.md) after every
// (re)connection: the `watching` reply is the full picture (task summaries
// and stats), then `task_update` and `stats` messages keep it current, so the
// page never polls. Cancel uses the ordinary `cancel` message (an admin may
// cancel any key's task); "Run a task" uses `submit`. Workers come with the
// `watching` reply and `worker_update` messages; what only the worker side
// knows (last heartbeat, restarts) and the done/failed counts are read from
// `GET /v1/admin/workers` every few seconds. On a cluster node the nodes
// panel shows every node (`GET /v1/admin/nodes`, same rhythm); outside a
// cluster that list is empty and the panel stays hidden.

import { TaskwireClient, TaskwireError } from './taskwire.js';
import { startSchedules } from './monitor-schedules.js';

const server = new URL('./', location.href).href;
const $ = (selector) => document.querySelector(selector);
/** Finished tasks kept on the page (newest first). */
const MAX_FINISHED = 200;

/** @type {Map<string, any>} task summaries by id */
const tasks = new Map();
/** @type {Map<string, any>} workers by id */
const workers = new Map();
/** last_heartbeat_at and restarts by worker id, from GET /v1/admin/workers */
const liveness = new Map();
let adminKey = null;
let stats = null;
let client = null;
let renderQueued = false;

function keyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get('key');
  if (value !== null) history.replaceState(null, '', location.pathname + location.search);
  return value;
}

function showNotice(text) {
  $('#notice').textContent = text;
}

function time(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString([], { hour12: false });
}

function duration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function cell(row, content, className) {
  const td = row.insertCell();
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? '';
  return td;
}

function code(text) {
  const el = document.createElement('code');
  el.textContent = text;
  return el;
}

/** A task id, shortened on screen; the whole id is its title and the row's data-task-id. */
function taskId(id) {
  const el = document.createElement('code');
  el.className = 'task-id';
  el.title = id;
  el.textContent = id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
  return el;
}

function cancelButton(summary) {
  const button = document.createElement('button');
  button.className = 'plain danger';
  button.type = 'button';
  button.textContent = 'Cancel';
  button.dataset.action = 'cancel';
  button.dataset.taskId = summary.task_id;
  button.setAttribute('aria-label', `Cancel ${summary.task} ${summary.task_id}`);
  return button;
}

function row(body, summary) {
  const tr = body.insertRow();
  tr.dataset.taskId = summary.task_id;
  tr.dataset.state = summary.state;
  return tr;
}

function render() {
  renderQueued = false;
  // Rows are rebuilt: keep keyboard focus on the same task's button.
  const focused = document.activeElement?.dataset?.taskId;
  const all = [...tasks.values()];
  const running = all.filter((t) => t.state === 'running').sort((a, b) => (a.started_at ?? '').localeCompare(b.started_at ?? ''));
  const queued = all.filter((t) => t.state === 'queued').sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
  const finished = all
    .filter((t) => t.state !== 'running' && t.state !== 'queued')
    .sort((a, b) => (b.finished_at ?? '').localeCompare(a.finished_at ?? ''));
  for (const old of finished.slice(MAX_FINISHED)) tasks.delete(old.task_id);

  const now = Date.now();
  const runningBody = $('#running tbody');
  runningBody.replaceChildren();
  for (const t of running) {
    const tr = row(runningBody, t);
    tr.id = `task-${t.task_id}`;
    cell(tr, code(t.task));
    cell(tr, taskId(t.task_id));
    cell(tr, t.client);
    cell(tr, t.worker ?? '');
    const bar = document.createElement('progress');
    bar.max = 1;
    if (typeof t.progress === 'number') bar.value = t.progress;
    bar.setAttribute('aria-label', `progress of ${t.task_id}`);
    const td = cell(tr, bar, 'progress');
    const pct = typeof t.progress === 'number' ? ` ${Math.round(t.progress * 100)}%` : '';
    td.append(`${pct}${t.message ? ` ${t.message}` : ''}`);
    const elapsed = cell(tr, t.started_at ? duration(now - Date.parse(t.started_at)) : '', 'num elapsed');
    if (t.started_at) elapsed.dataset.since = t.started_at;
    cell(tr, cancelButton(t));
  }
  if (!running.length) runningBody.insertRow().insertCell().outerHTML = '<td colspan="7" class="empty">Nothing running.</td>';

  const queuedBody = $('#queued tbody');
  queuedBody.replaceChildren();
  for (const t of queued) {
    const tr = row(queuedBody, t);
    cell(tr, String(t.position ?? ''), 'num');
    cell(tr, code(t.task));
    cell(tr, taskId(t.task_id));
    cell(tr, t.client);
    cell(tr, time(t.created_at));
    cell(tr, cancelButton(t));
  }
  if (!queued.length) queuedBody.insertRow().insertCell().outerHTML = '<td colspan="6" class="empty">Queue empty.</td>';

  const finishedBody = $('#finished tbody');
  finishedBody.replaceChildren();
  for (const t of finished.slice(0, MAX_FINISHED)) {
    const tr = row(finishedBody, t);
    cell(tr, time(t.finished_at));
    cell(tr, code(t.task));
    cell(tr, taskId(t.task_id));
    cell(tr, t.client);
    cell(tr, t.state, `state state-${t.state}`);
    const details = cell(tr, '');
    if (t.error) {
      const c = document.createElement('span');
      c.className = 'error-code';
      c.textContent = t.error.code;
      details.append(c, ` ${t.error.message ?? ''}`);
    } else if (t.state === 'cancelled') {
      details.textContent = `reason: ${t.reason ?? 'unknown'}`;
    }
    cell(tr, duration(t.duration_ms), 'num');
  }
  if (!finished.length) finishedBody.insertRow().insertCell().outerHTML = '<td colspan="7" class="empty">Nothing finished yet.</td>';

  renderWorkers();

  if (focused) document.querySelector(`button[data-task-id="${CSS.escape(focused)}"]`)?.focus();

  if (stats) {
    $('#stat-busy').textContent = `${stats.workers_busy} / ${stats.workers}`;
    $('#stat-running').textContent = String(stats.running);
    $('#stat-queued').textContent = String(stats.queued);
    $('#stat-connections').textContent = String(stats.connections);
    const countsBody = $('#counts tbody');
    countsBody.replaceChildren();
    for (const [name, counts] of Object.entries(stats.tasks ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
      const tr = countsBody.insertRow();
      tr.dataset.task = name;
      cell(tr, code(name));
      cell(tr, String(counts.completed ?? 0), 'num');
      cell(tr, String(counts.failed ?? 0), 'num');
      cell(tr, String(counts.cancelled ?? 0), 'num');
    }
  }
}

function renderWorkers() {
  const body = $('#workers tbody');
  body.replaceChildren();
  const list = [...workers.values()].sort((a, b) => `${a.kind}${a.name}`.localeCompare(`${b.kind}${b.name}`));
  for (const w of list) {
    const extra = liveness.get(w.id) ?? {};
    const tr = body.insertRow();
    tr.dataset.workerId = w.id;
    tr.dataset.workerName = w.name;
    tr.dataset.state = w.state;
    const name = cell(tr, code(w.name));
    name.title = w.id;
    cell(tr, w.kind === 'managed' ? `managed, pid ${w.pid ?? '?'}` : w.kind === 'remote' ? `remote, ${w.peer ?? ''}` : w.kind);
    cell(tr, (w.tasks ?? []).join(', '));
    cell(tr, `${w.busy ?? 0} / ${w.slots ?? 0}`, 'num busy');
    cell(tr, w.state, `state state-${w.state}`);
    cell(tr, time(w.connected_at));
    cell(tr, time(extra.last_heartbeat_at ?? w.last_heartbeat_at), 'heartbeat');
    // The live feed says when workers come and go; counts also come with the poll.
    const done = Math.max(w.done ?? 0, extra.done ?? 0);
    const failed = Math.max(w.failed ?? 0, extra.failed ?? 0);
    cell(tr, `${done} / ${failed}`, 'num');
    cell(tr, String(extra.restarts ?? w.restarts ?? ''), 'num');
    const runningCell = cell(tr, '');
    for (const id of w.running ?? []) {
      const link = document.createElement('a');
      link.href = `#task-${id}`;
      link.append(taskId(id));
      runningCell.append(link, ' ');
    }
  }
  if (!list.length) body.insertRow().insertCell().outerHTML = '<td colspan="10" class="empty">No workers.</td>';
}

function renderNodes(nodes) {
  const card = $('#nodes-card');
  card.hidden = nodes.length === 0;
  const body = $('#nodes tbody');
  body.replaceChildren();
  for (const n of [...nodes].sort((a, b) => a.name.localeCompare(b.name))) {
    const tr = body.insertRow();
    tr.dataset.node = n.name;
    tr.dataset.state = n.state;
    cell(tr, n.this ? `${n.name} (this node)` : n.name);
    cell(tr, n.state, `state state-${n.state}`);
    cell(tr, time(n.started_at));
    cell(tr, time(n.seen_at));
    cell(tr, String(n.workers ?? 0), 'num');
    cell(tr, `${n.busy ?? 0} / ${n.slots ?? 0}`, 'num busy');
  }
}

async function refreshNodes() {
  try {
    const response = await fetch(new URL('v1/admin/nodes', server), { headers: { authorization: `Bearer ${adminKey}` } });
    if (!response.ok) return;
    const body = await response.json();
    renderNodes(body.nodes ?? []);
  } catch {
    // The next round tries again.
  }
}

async function refreshLiveness() {
  if (!adminKey) return;
  refreshNodes();
  try {
    const response = await fetch(new URL('v1/admin/workers', server), { headers: { authorization: `Bearer ${adminKey}` } });
    if (!response.ok) return;
    const body = await response.json();
    liveness.clear();
    for (const w of body.workers ?? []) {
      liveness.set(w.id, { last_heartbeat_at: w.last_heartbeat_at, restarts: w.restarts, done: w.done, failed: w.failed });
    }
    scheduleRender();
  } catch {
    // The next round tries again; the live feed goes on meanwhile.
  }
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

// The schedules panel polls admin REST routes: it starts once `watch` has
// shown the key is an admin key, so a refused key sees one clear notice.
let schedulesTimer = null;

async function watch() {
  try {
    const reply = await client.request({ type: 'watch' });
    tasks.clear();
    for (const summary of reply.tasks ?? []) tasks.set(summary.task_id, summary);
    workers.clear();
    for (const worker of reply.workers ?? []) workers.set(worker.id, worker);
    refreshLiveness();
    stats = reply.stats ?? null;
    showNotice('');
    $('#app').hidden = false;
    scheduleRender();
    if (schedulesTimer === null && adminKey !== null) {
      schedulesTimer = startSchedules(server, adminKey, $('#schedules-card'), showNotice);
    }
  } catch (err) {
    if (err instanceof TaskwireError && err.code === 'unauthorized') {
      showNotice(`This key cannot watch the server: it is not an admin key (${err.code}: ${err.message}).`);
    } else {
      showNotice(`watch failed: ${err.message} (${err.code ?? 'error'})`);
    }
  }
}

function fillTaskSelect(welcome) {
  const select = $('#submit-task');
  const chosen = select.value;
  select.replaceChildren();
  for (const task of welcome.tasks) {
    const option = document.createElement('option');
    option.value = task.name;
    option.textContent = task.name;
    option.title = task.description ?? '';
    select.append(option);
  }
  if (chosen) select.value = chosen;
}

async function start(key) {
  $('#key-form').hidden = true;
  showNotice('');
  client = new TaskwireClient(server, { key });
  adminKey = key;
  window.taskwireClient = client; // for the console
  const conn = $('#conn');
  client.addEventListener('state', (e) => {
    conn.dataset.state = e.detail;
    conn.textContent = e.detail === 'open' ? 'live' : e.detail;
  });
  client.addEventListener('welcome', (e) => {
    fillTaskSelect(e.detail);
    watch();
  });
  client.addEventListener('message', (e) => {
    const msg = e.detail;
    if (msg.type === 'task_update' && msg.task) {
      tasks.set(msg.task.task_id, { ...tasks.get(msg.task.task_id), ...msg.task });
      scheduleRender();
    } else if (msg.type === 'worker_update' && msg.worker) {
      if (msg.worker.state === 'gone') workers.delete(msg.worker.id);
      else workers.set(msg.worker.id, msg.worker);
      scheduleRender();
    } else if (msg.type === 'stats' && msg.stats) {
      stats = msg.stats;
      scheduleRender();
    }
  });
  try {
    await client.connect();
  } catch (err) {
    showNotice(`Cannot connect: ${err.message} (${err.code})`);
    $('#key-form').hidden = false;
  }
}

document.addEventListener('click', async (e) => {
  const button = e.target.closest?.('button[data-action="cancel"]');
  if (!button || !client) return;
  button.disabled = true;
  button.textContent = 'Cancelling…';
  try {
    await client.cancel(button.dataset.taskId);
  } catch (err) {
    showNotice(`Cancel ${button.dataset.taskId}: ${err.message} (${err.code})`);
    button.disabled = false;
    button.textContent = 'Cancel';
  }
});

$('#submit-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const result = $('#submit-result');
  let input;
  try {
    input = JSON.parse($('#submit-input').value);
  } catch (err) {
    result.textContent = `The input is not valid JSON: ${err.message}`;
    return;
  }
  const handle = client.submit($('#submit-task').value, input);
  try {
    const accepted = await handle.accepted;
    result.textContent = `Submitted: ${accepted.task_id}`;
    result.dataset.taskId = accepted.task_id;
  } catch (err) {
    result.textContent = `Rejected: ${err.code}: ${err.message}`;
  }
});

$('#key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('#key-input').value.trim();
  $('#key-input').value = '';
  if (value) start(value);
});

// Elapsed times tick locally; the data itself only changes on server messages.
setInterval(() => {
  const now = Date.now();
  for (const td of document.querySelectorAll('#running td[data-since]')) {
    td.textContent = duration(now - Date.parse(td.dataset.since));
  }
}, 1000);
setInterval(refreshLiveness, 5000);

const fragmentKey = keyFromFragment();
if (fragmentKey) start(fragmentKey);
else $('#key-form').hidden = false;
